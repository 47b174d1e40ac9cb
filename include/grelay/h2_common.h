/* What both nghttp2 sessions (downstream server, upstream client) share:
 * one place for their options, so hardening limits stay identical on both
 * sides; the connection preface; and how a body provider ends a read. */
#ifndef GRELAY_H2_COMMON_H
#define GRELAY_H2_COMMON_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

/* The client connection preface (RFC 9113 3.4). */
#define H2_PREFACE NGHTTP2_CLIENT_MAGIC
#define H2_PREFACE_LEN NGHTTP2_CLIENT_MAGIC_LEN

/* The largest header block either session sends (see h2_common_options). */
#define H2_MAX_SEND_HEADER_BLOCK ((1u << 20) + 64 * 1024)

/* New options with what both sides use: manual flow control (window
 * credit is given back only when the other side took the bytes) and no
 * closed-stream retention (no priority tree). Returns GR_OK or GR_ERR_NOMEM. */
int h2_common_options(nghttp2_option **opt);
/* Frees a side's callbacks and options (either may be NULL). */
void h2_common_free(nghttp2_session_callbacks *cbs, nghttp2_option *opt);

/* How a data provider's read ends: n bytes were pulled; eof: the body is
 * complete. Trailers (nva, cnt) are submitted to follow the body: none
 * when cnt is 0; cnt > 0 with nva NULL says they exist but could not be
 * built. Returns what the provider returns: n, NGHTTP2_ERR_DEFERRED when
 * there was nothing, or a failure that resets the stream when trailers due
 * cannot be built or queued (ending the body without them would read as a
 * success with no grpc-status). */
static inline ssize_t h2_common_data_result(nghttp2_session *session, int32_t stream_id, size_t n, bool eof,
                                            const nghttp2_nv *nva, size_t cnt, uint32_t *flags)
{
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (cnt > 0) {
            if (nva == NULL || nghttp2_submit_trailer(session, stream_id, nva, cnt) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    } else if (n == 0) {
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

#endif
