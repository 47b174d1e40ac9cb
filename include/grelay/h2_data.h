/* How both sides' nghttp2 data providers end a read: the same rules for a
 * body pulled from a stream, whichever direction it goes. */
#ifndef GRELAY_H2_DATA_H
#define GRELAY_H2_DATA_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

/* n bytes were pulled; eof: the body is complete. Trailers (nva, cnt; none
 * when cnt is 0) are submitted to follow the body. Returns what the
 * provider returns: n, or NGHTTP2_ERR_DEFERRED when there was nothing. */
static inline ssize_t h2_data_result(nghttp2_session *session, int32_t stream_id, size_t n, bool eof,
                                     const nghttp2_nv *nva, size_t cnt, uint32_t *flags)
{
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (cnt > 0 && nva != NULL && nghttp2_submit_trailer(session, stream_id, nva, cnt) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    } else if (n == 0) {
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

struct stream;

/* A body provider for either direction: looks the stream up, pulls with
 * pull, and ends with trailers(). */
static inline ssize_t h2_provide(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length,
                                 uint32_t *flags, size_t (*pull)(struct stream *, uint8_t *, size_t, bool *),
                                 nghttp2_nv *(*trailers)(struct stream *, size_t *))
{
    struct stream *s = (struct stream *)nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool eof;
    size_t n = pull(s, out, length, &eof), cnt = 0;
    nghttp2_nv *nva = eof ? trailers(s, &cnt) : NULL;
    return h2_data_result(session, stream_id, n, eof, nva, cnt, flags);
}

#endif
