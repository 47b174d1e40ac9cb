/* The checks of an upstream response, and of a client's request, that
 * nghttp2's HTTP messaging would make, done by grelay itself: both sessions
 * run with nghttp2_option_set_no_http_messaging (it costs ~900
 * instructions a call on the upstream side and ~2,000 on the client side,
 * and grelay reads most of what it checks anyway). The request side is
 * described before its functions, below.
 *
 * What nghttp2 1.52 checks on a client stream with HTTP messaging on
 * (lib/nghttp2_http.c, nghttp2_session.c; grelay sets no
 * on_invalid_header_callback, so no field is merely ignored), each a
 * malformed response (H2_CHECK_BAD: the stream is reset with
 * PROTOCOL_ERROR, as nghttp2 resets it, and the call fails INTERNAL):
 * - a field name with a character outside the lower-case token set
 *   (RFC 9110 tchar; an upper-case letter, SP, ':', CR, LF, NUL...);
 * - a field value with a control character other than HTAB (NUL, CR, LF...)
 *   or DEL, or starting or ending with SP or HTAB (RFC 9113 8.2.1): so a
 *   CR/LF never reaches an HTTP/1.1 client (no response splitting);
 * - pseudo headers: only :status, once, first in the block, never in
 *   trailers, three digits; a response block without :status; 101 (RFC
 *   9113 8.6);
 * - connection-specific fields (connection, keep-alive, proxy-connection,
 *   transfer-encoding, upgrade) and te other than "trailers";
 * - content-length: a second one, or one that is not a decimal number;
 *   DATA past it, or END_STREAM short of it (no body at all after a HEAD
 *   request, or in a 204 or 304 answer);
 * - 1xx answers: any number of them before the final one; DATA or
 *   END_STREAM while only 1xx answers came;
 * - trailers (a block after the final answer) without END_STREAM.
 * What nghttp2 still checks itself without HTTP messaging: DATA before any
 * HEADERS (a connection error), frames after END_STREAM (STREAM_CLOSED),
 * HPACK, sizes and flow control. */
#ifndef GRELAY_H2_CHECK_H
#define GRELAY_H2_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A verdict. */
enum h2_check_verdict {
    H2_CHECK_OK,  /* forward it */
    H2_CHECK_BAD, /* a malformed response: reset the stream (PROTOCOL_ERROR) */
};

/* What one upstream stream's response has shown so far. */
struct h2_check {
    int64_t content_length; /* the content-length announced, or -1 */
    uint64_t received;      /* DATA payload bytes so far */
    uint16_t status;        /* :status of the block being read, 0 until it came */
    bool regular;           /* the block being read had a regular field: no pseudo header may follow */
    bool final;             /* the final (non-1xx) answer came: a later block is trailers */
    bool head;              /* the request was HEAD: no body may follow */
    bool bad;               /* found malformed: the stream is being reset, nothing more is forwarded */
};

/* A new stream (head: the request's :method is HEAD). */
void h2_check_init(struct h2_check *c, bool head);
/* A header block begins. */
static inline void h2_check_begin(struct h2_check *c)
{
    c->status = 0;
    c->regular = false;
}
/* One field of the block; *why says what was wrong (BAD). */
enum h2_check_verdict h2_check_field(struct h2_check *c, const uint8_t *name, size_t namelen, const uint8_t *value,
                                     size_t valuelen, const char **why);
/* The block is complete (end_stream: it carried END_STREAM). */
enum h2_check_verdict h2_check_block(struct h2_check *c, bool end_stream, const char **why);
/* n bytes of DATA payload. */
enum h2_check_verdict h2_check_data(struct h2_check *c, size_t n, const char **why);
/* END_STREAM on DATA. */
enum h2_check_verdict h2_check_end(const struct h2_check *c, const char **why);

/* ---- Requests: what nghttp2 1.52 checks on a server stream with HTTP
 * messaging on (lib/nghttp2_http.c; grelay sets no
 * on_invalid_header_callback and never SETTINGS_ENABLE_CONNECT_PROTOCOL),
 * each a malformed request, answered as nghttp2 answers it: RST_STREAM
 * PROTOCOL_ERROR, charged to the connection's reset budget, and the call
 * never starts (or, under way, is cut):
 * - a field name outside the lower-case token set, or ':' alone; a value
 *   with a control character other than HTAB, or DEL, or (regular fields)
 *   starting or ending with SP or HTAB; :method a token, :path visible
 *   characters (no SP), :authority and host the authority characters,
 *   :scheme ALPHA *(ALPHA / DIGIT / "+" / "-" / ".");
 * - pseudo headers: :method, :scheme, :path, :authority only (:protocol
 *   is refused, extended CONNECT not being offered), each once and not
 *   empty, none after a regular field or in trailers; host at most once
 *   and not empty;
 * - a head without :method, :scheme and :path, or without both
 *   :authority and host; CONNECT with :scheme or :path, or without
 *   :authority; an http(s) :path not starting with '/' (but "*" for
 *   OPTIONS);
 * - connection-specific fields and te other than "trailers";
 * - content-length a second time (head and trailers count together) or not
 *   a number; DATA past it, END_STREAM short of it (ignored for CONNECT);
 * - trailers without END_STREAM. ---- */
struct h2_check_req {
    int64_t content_length; /* the content-length announced, or -1 */
    uint64_t received;      /* DATA payload bytes so far */
    uint16_t seen;          /* H2_REQ_* bits of what the blocks showed */
    bool bad;               /* found malformed: the stream is being reset, nothing more is forwarded */
};

/* A new request stream. */
void h2_check_req_init(struct h2_check_req *c);
/* One field of the head (trailers false) or of the trailers. */
enum h2_check_verdict h2_check_req_field(struct h2_check_req *c, bool trailers, const uint8_t *name, size_t namelen,
                                         const uint8_t *value, size_t valuelen, const char **why);
/* The head (trailers false) or the trailers are complete (end_stream: the
 * block carried END_STREAM). */
enum h2_check_verdict h2_check_req_block(struct h2_check_req *c, bool trailers, bool end_stream, const char **why);
/* n bytes of DATA payload; END_STREAM on DATA. */
enum h2_check_verdict h2_check_req_data(struct h2_check_req *c, size_t n, const char **why);
enum h2_check_verdict h2_check_req_end(const struct h2_check_req *c, const char **why);

#endif
