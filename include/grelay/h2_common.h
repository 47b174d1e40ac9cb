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
 * credit is given back only when the other side took the bytes), no
 * closed-stream retention (no priority tree), and nghttp2's abuse limits
 * (queued ACKs, SETTINGS entries, CONTINUATION frames, pushes, and the
 * library's own RST_STREAM rate limit as a backstop behind h2_guard).
 * Returns GR_OK or GR_ERR_NOMEM. */
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

/* The bytes of a GOAWAY frame without debug data. */
#define H2_GOAWAY_LEN 17
/* Writes a GOAWAY frame (last stream id `last`, error `code`) for the
 * times grelay must write one itself: no session to submit it to (a
 * hibernating connection, or one nghttp2 gave up on). */
void h2_common_goaway(int32_t last, uint32_t code, uint8_t out[H2_GOAWAY_LEN]);
/* nghttp2 reset a stream of session for DATA past its window
 * (FLOW_CONTROL_ERROR): the connection window those bytes took, at least
 * the stream's window (n), is never given back, as HAProxy does not give
 * it: the local connection window shrinks by n, no frame goes, later
 * WINDOW_UPDATEs are smaller. A client that provokes resets this way
 * stalls itself after the connection window, instead of costing a call and
 * a reset per stream until the reset budget ends it; a client that keeps
 * to its windows never comes here. */
void h2_common_withhold_window(nghttp2_session *session, int32_t n);
/* The bytes of a PING frame. */
#define H2_PING_LEN 17
/* Writes a PING frame with opaque data, for a connection with no session
 * (a hibernated one being drained). */
void h2_common_ping(const uint8_t opaque[8], uint8_t out[H2_PING_LEN]);
/* True when p[0..n) is exactly one PING ACK carrying opaque. */
bool h2_common_is_ping_ack(const uint8_t *p, size_t n, const uint8_t opaque[8]);

/* Where the client's byte stream stands between HTTP/2 frames: the one
 * scan of frame headers on a client connection, read by hibernation (is
 * this a frame boundary?), the request-headers timer (is a header block
 * open?) and the abuse guard (each frame's verdict, before nghttp2 reads it). */
struct h2_frames {
    uint32_t left;   /* payload bytes of the current frame still to come */
    uint8_t hdr[9];  /* a frame header split across reads */
    uint8_t have;    /* bytes of hdr[] received */
    uint8_t preface; /* bytes of the 24-byte client preface still to come */
    bool in_block;   /* a header block is open (no END_HEADERS yet) */
};

/* Told of each frame header as the scan completes it; false stops the scan. */
typedef bool (*h2_frame_cb)(void *arg, const uint8_t hdr[9]);

/* The state of a new connection: the preface comes first. */
void h2_common_frames_init(struct h2_frames *t);
/* Follows n more bytes of the client's stream, calling on_frame (unless
 * NULL) with each frame header completed. Returns n, or, when on_frame
 * stopped it, where that frame begins in p (0 when its header began in an
 * earlier read). */
size_t h2_common_frames_feed(struct h2_frames *t, const uint8_t *p, size_t n, h2_frame_cb on_frame, void *arg);
/* True when the next byte starts a frame and no header block is open. */
bool h2_common_frames_at_boundary(const struct h2_frames *t);
/* True while a header block is incomplete: no END_HEADERS yet, or the
 * payload of its last frame still coming. */
bool h2_common_frames_in_block(const struct h2_frames *t);

/* ---- Abuse budgets of a client connection (docs/limits.md, HTTP/2 abuse) ----
 *
 * Two token buckets per connection, as nghttp2 1.57's rapid-reset limit and
 * HAProxy's glitch counter do, and what a stream id's past tells:
 * - resets: a client RST_STREAM on a call still open and younger than
 *   H2_PREMATURE_RESET_S, and every RST_STREAM the client made us send (DATA
 *   past the stream window, a malformed or refused request: MadeYouReset),
 *   cost a token each; a call that ends normally gives one back; the bucket
 *   also refills H2_RESET_RATE a second, up to H2_RESET_BURST (or the
 *   listener's max_concurrent_streams when smaller, at least 100);
 * - glitches: frames with no use (empty DATA without END_STREAM, unknown
 *   frame types, PRIORITY, SETTINGS after the first, and a PING unless we
 *   sent HEADERS or DATA since the previous one: gRPC's BDP probes ride on
 *   data, and grpc servers allow such pings too) cost one each,
 *   H2_GLITCH_BURST at most, H2_GLITCH_RATE back a second.
 * An empty bucket ends the connection with GOAWAY ENHANCE_YOUR_CALM.
 * - closed streams (RFC 9113 5.1): nghttp2 forgets a stream once closed, so
 *   the guard remembers the last H2_GUARD_IDS client stream ids: whether
 *   each was opened, whether it closed, and whether we reset it. DATA or HEADERS on one the
 *   client closed is a connection error STREAM_CLOSED, HEADERS on an id
 *   never used below the highest one is PROTOCOL_ERROR, and frames on a
 *   stream we reset are ignored, as the RFC requires. Older ids are ignored
 *   (and cost a glitch): we cannot tell whether we reset them. */
#define H2_GLITCH_BURST 500
#define H2_GLITCH_RATE 50
#define H2_RESET_RATE 33
#define H2_RESET_BURST 200
#define H2_PREMATURE_RESET_S 1.0
#define H2_GUARD_IDS 64

/* A token bucket. */
struct h2_bucket {
    uint32_t milli; /* tokens left, in thousandths */
    uint32_t at_ms; /* last refill, on a wrapping millisecond clock */
};

/* Full, as of now_ms. */
void h2_bucket_init(struct h2_bucket *b, uint32_t burst, uint32_t now_ms);
/* Refills rate tokens a second (burst at most) for the time since the last
 * call, then takes n: false, with nothing taken, when fewer are left. */
bool h2_bucket_take(struct h2_bucket *b, uint32_t burst, uint32_t rate, uint32_t n, uint32_t now_ms);
/* Gives n tokens back (burst at most). */
void h2_bucket_give(struct h2_bucket *b, uint32_t burst, uint32_t n);

/* One client connection's budgets and stream-id memory. */
struct h2_guard {
    struct h2_bucket resets;   /* see above */
    struct h2_bucket glitches; /* see above */
    uint64_t used;             /* bit i: the client opened stream top - 2i */
    uint64_t reset;            /* bit i: we sent RST_STREAM on stream top - 2i */
    uint64_t closed;           /* bit i: stream top - 2i was open in nghttp2, and closed */
    int32_t top;               /* the highest stream id the client opened (0: none) */
    int32_t client_rst;        /* the stream the client reset last: its close gives no token back */
    bool settings_seen;        /* the client's first SETTINGS came (later ones are glitches) */
    bool ended;                /* a verdict ended the connection: the rest is not read */
    bool answered;             /* we sent HEADERS or DATA since the client's last PING: the next one is free */
};

/* A new connection: full buckets (reset_burst tokens for resets). */
void h2_guard_init(struct h2_guard *g, uint32_t reset_burst, uint32_t now_ms);
/* Follows the next n bytes the client sent through frames (the
 * connection's one scan, h2_common_frames_feed) and judges each frame
 * header before nghttp2 reads the frame (h2 as it stands before them).
 * Returns how many of the bytes nghttp2 may read: n, or where the frame
 * that ends the connection begins; then *code is the GOAWAY error
 * (NGHTTP2_NO_ERROR otherwise) and *why says what happened. */
size_t h2_guard_scan(struct h2_guard *g, struct h2_frames *frames, nghttp2_session *h2, const uint8_t *p, size_t n,
                     uint32_t now_ms, uint32_t *code, const char **why);
/* We sent RST_STREAM on stream id: frames that still come on it are
 * ignored. */
void h2_guard_sent_rst(struct h2_guard *g, int32_t id);
/* Stream id closed (on_stream_close): frames that come on it later are a
 * STREAM_CLOSED error, unless we reset it. A stream nghttp2 never opened
 * (refused) is not closed this way: what follows its HEADERS is ignored. */
void h2_guard_closed(struct h2_guard *g, int32_t id);
/* Whether an RST_STREAM we send with code counts against the reset budget:
 * every one but NO_ERROR (the answer was complete first), CANCEL, and
 * REFUSED_STREAM on a call (has_call: grelay refuses it, the overload guard). */
static inline bool h2_guard_provoked(uint32_t code, bool has_call)
{
    return code != NGHTTP2_NO_ERROR && code != NGHTTP2_CANCEL && !(code == NGHTTP2_REFUSED_STREAM && has_call);
}

#endif
