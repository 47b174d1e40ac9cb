/* One call: the state machine joining a downstream stream to an upstream one.
 * Owned by its downstream connection; refers to (never owns) the upstream
 * stream of its current attempt, through an up_slot. Freed when the
 * downstream half closes; the upstream half is reset and detached first.
 *
 * Three halves, each an enum with one transition function that asserts the
 * legal moves:
 * - the request (from the client): HEADERS -> BODY -> ENDED;
 * - the response (to the client): WAITING -> BODY -> ENDED, or WAITING ->
 *   ENDED for an answer in one HEADERS frame (trailers-only, local replies);
 *   a retry takes BODY's precondition away, so a response never goes back;
 * - the attempt (upstream): IDLE -> QUEUED | SUBMITTED -> SENT -> CLOSED,
 *   with BACKOFF between attempts, and DONE when no attempt will follow.
 *
 * Flow control, the invariant that matters most: each direction's bytes
 * and credit are a struct flow (flow.h, where the invariant
 * received = unacked + given_back is written down); stream_credit_back() in
 * stream.c is the one place credit goes back to either peer, through the
 * downstream's (HTTP/2 or HTTP/1.1) or the upstream's consume. */
#ifndef GRELAY_STREAM_H
#define GRELAY_STREAM_H

#include "grelay/arena.h"
#include "grelay/buf.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/flow.h"
#include "grelay/grpc.h"
#include "grelay/grpcweb.h"
#include "grelay/h2_check.h"
#include "grelay/headers.h"
#include "grelay/upstream.h"

#include <ev.h>
#include <nghttp2/nghttp2.h>

struct downstream;
struct worker;
struct worker_snap;
struct stats_key;

/* The request half, as the client sends it. */
enum stream_req {
    REQ_HEADERS, /* the request's header block is being read */
    REQ_BODY,    /* headers complete; DATA (and trailers) may come */
    REQ_ENDED,   /* the client sent END_STREAM */
};

/* The response half, as the client gets it. */
enum stream_resp {
    RESP_WAITING, /* nothing sent to the client yet (the response headers may be held: resp_held) */
    RESP_BODY,    /* response headers sent; body bytes flow */
    RESP_ENDED,   /* the answer is complete here (the client may still be reading it) */
};

/* The current attempt upstream. */
enum stream_attempt {
    ATT_IDLE,      /* no attempt yet (routing), or between a failure and the next try */
    ATT_QUEUED,    /* in a pool's line, waiting for a stream slot (or on a connection, for its SETTINGS) */
    ATT_SUBMITTED, /* on an upstream connection; HEADERS queued there */
    ATT_SENT,      /* the request HEADERS left for the backend */
    ATT_BACKOFF,   /* waiting out a retry backoff (attempt_timer) */
    ATT_CLOSED,    /* the upstream stream closed or the connection went: detach pending */
    ATT_DONE,      /* detached, and no attempt will follow */
};

/* Bytes of a call's arena inside struct stream: its request headers, the
 * attempt arena's first block (stream.c) and what the answer needs. Sized
 * by measurement (2026-12-01, request headers and the attempt's 512 bytes
 * included): 760 bytes for the bench's held bidi calls, 1,056-1,096 for
 * h2load's unary calls, 1,110-1,350 for grpcio's; more goes to malloc'd
 * blocks. It was 2,048, most of a held call's memory (issue 16). */
#define STREAM_ARENA_FIRST 1280

#define STREAM_BRK_CALL 1u  /* the call, in breaker requests (breaker.h) */
#define STREAM_BRK_RETRY 2u /* its configured retry, in breaker retries */

struct stream {
    struct downstream *down;          /* the client connection that owns it */
    int32_t id;                       /* downstream stream id */
    enum stream_req req_state;        /* see enum stream_req */
    enum stream_resp resp_state;      /* see enum stream_resp */
    enum stream_attempt att;          /* see enum stream_attempt */
    struct arena arena;               /* headers and strings of this call */
    struct hdr_list req_hdrs;         /* regular request headers */
    struct hdr_list req_trailers;     /* request trailers (rare in gRPC) */
    struct hdr_list resp_hdrs;        /* response headers from upstream */
    struct hdr_list resp_trailers;    /* response trailers, from upstream or made here */
    struct gr_hdr method;             /* pseudo headers (value NULL when absent), in the arena */
    struct gr_hdr path;               /* :path */
    struct gr_hdr authority;          /* :authority, or host when absent */
    struct gr_hdr grpc_timeout;       /* the client's grpc-timeout, replaced upstream by the time left */
    uint32_t req_header_bytes;        /* the current request header block (head, then trailers): 32 + name +
                                       value per field (RFC 9113 6.5.2), against max_request_headers */
    uint32_t req_header_fields;       /* fields of that block, pseudo-headers included, against
                                       max_request_header_fields */
    uint8_t req_over;                 /* request.c's enum req_over: the limit a block of this call passed */
    struct h2_check_req h2req;        /* an HTTP/2 client's call: what its blocks and DATA showed (h2_check.h) */
    uint8_t resp_1xx;                 /* informational (1xx) responses of this attempt */
    uint32_t resp_header_bytes;       /* this attempt's response headers and trailers, 32 + name + value each */
    uint32_t resp_header_fields;      /* their fields, pseudo-headers included */
    struct arena att_arena;           /* the attempt's memory (request nv, response headers and trailers),
                                       emptied for each retry; first block carved from arena once */
    uint64_t deadline_us;             /* absolute, on gr_now_us()'s clock; 0 = no deadline */
    ev_timer deadline_timer;          /* fires at the deadline */
    const struct gr_route_cfg *route; /* chosen route */
    struct worker_snap *snap;         /* the config snapshot route belongs to, held until the call ends (or NULL) */
    struct grpcweb *web;              /* gRPC-Web codec, or NULL for native gRPC */
    const struct gr_cors_cfg *cors;   /* CORS policy granting this call's Origin, or NULL */
    struct gr_hdr origin;             /* the granted Origin */
    struct flow req;                  /* request body, client -> upstream */
    struct flow resp;                 /* response body, upstream -> client */
    struct up_slot up;                /* the current attempt's upstream stream (or place in line) */
    ev_timer attempt_timer;           /* ATT_BACKOFF: the backoff; otherwise the per-try timeout */
    size_t last_ep;                   /* endpoint index of the latest attempt */
    uint32_t retries;                 /* configured retries made */
    uint32_t transparent_retries;     /* transparent retries made (bounded by the endpoint count: may pass 255) */
    int resp_status;                  /* upstream :status */
    ev_tstamp born;                   /* when the call began (ev_now): a client's reset of a call younger than
                                         H2_PREMATURE_RESET_S counts against its connection's reset budget */
    ev_tstamp write_wait;             /* since when response bytes (or its end) wait for the client to take
                                         them, on ev_now's clock; 0 = nothing waits (stream_write_timeout) */
    size_t held;                      /* what this call counts in down->held (replay copy + response queued) */
    bool resp_end_due;                /* the body's end (and trailers) is due but not yet taken by the client */
    bool resp_cut;                    /* reset for not being read: nothing more goes to the client */
    bool start_due;                   /* routed and admitted; stream_start() waits for the end of the client's
                                         read (h2_server.c), unless the stream is reset within it */
    bool resp_held;                   /* the attempt's response headers came and wait, unsent, for its first
                                         DATA or trailers (a route with a retry_policy: a late status in
                                         retry_on is retried); resp_state stays RESP_WAITING */
    ev_timer hold_timer;              /* bounds that wait: the rest of the per-try timeout, else HOLD_MAX_S */
    struct gr_list down_link;         /* in down->streams */
    /* What metrics and the access log say of the call (stream_obs.c). */
    uint64_t t0_us;                 /* gr_now_us() when the request headers began */
    const struct stats_key *att_ep; /* the latest attempt's endpoint (its series and address), or NULL */
    bool att_live;                  /* that attempt is counted in its endpoint's attempts in flight */
    uint32_t attempts;              /* attempts made upstream */
    int8_t code;                    /* the gRPC status grelay sent (a local answer); -1: the upstream's */
    bool route_counted;             /* counted in its route's calls in flight */
    uint16_t http_status;           /* a plain HTTP answer (CORS preflight, not gRPC): its :status; 0: a gRPC answer */
    bool reset;                     /* grelay ended the call with RST_STREAM (or closed its HTTP/1.1 connection) */
    uint8_t brk;                    /* what the call counts in its cluster's breaker: STREAM_BRK_* bits */
    _Alignas(16) unsigned char arena_first[STREAM_ARENA_FIRST]; /* the arena's first block: most calls need no
                                                                   malloc */
};

/* Metrics and the access log of a call (stream_obs.c): it began (its
 * listener's calls in flight), it was routed (its route's), an attempt
 * went to endpoint key ep, an attempt failed with code and a retry follows
 * (transparent or configured), and the call ended (what the client got:
 * counters, histogram, access log line). */
void stream_obs_begin(struct stream *s);
void stream_obs_routed(struct stream *s);
void stream_obs_attempt(struct stream *s, const struct stats_key *ep);
void stream_obs_retry(struct stream *s, int code, bool transparent);
void stream_obs_detach(struct stream *s); /* the attempt is let go: its outcome to the pool (outlier.h) */
void stream_obs_end(struct stream *s);

/* The worker's stream cache holds struct streams. */
void stream_cache_init(struct worker *w);
struct stream *stream_new(struct downstream *d, int32_t id);
static inline int32_t stream_id(const struct stream *s) { return s->id; }
static inline bool stream_req_ended(const struct stream *s) { return s->req_state == REQ_ENDED; }
static inline bool stream_resp_started(const struct stream *s) { return s->resp_state != RESP_WAITING; }
/* Request bytes received and not yet given back to the client's window
 * (an HTTP/1.1 connection stops reading past its stream_buffer). */
static inline uint64_t stream_req_unacked(const struct stream *s) { return flow_unacked(&s->req); }

/* Downstream events (from h2_server, h1_server); what the client sends
 * (head and body) goes to request.h first. */
void stream_on_req_end(struct stream *s);
/* The downstream stream closed: resets the upstream half and frees s. */
void stream_on_down_close(struct stream *s, uint32_t error_code);
/* The client connection is gone: every stream of d closes (and resets
 * upstream). */
void stream_close_all(struct downstream *d);
/* A drain ran out of time: every call of d whose answer is not complete
 * ends with UNAVAILABLE and msg (trailers, so clients may retry). Returns
 * how many. */
size_t stream_cut_all(struct downstream *d, const char *msg);
/* The connection's CONN_TIMER_WRITE deadline passed (now: ev_now): every
 * call whose response has waited stream_write_timeout for the client to
 * take any of it is reset (its upstream stream too) and its buffers freed;
 * the deadline is set again for the earliest call still waiting. */
void stream_write_timeouts(struct downstream *d, ev_tstamp now);
/* Copies up to len bytes of the response body into out (len >= 1). Sets
 * *eof once the body is complete; HTTP trailers then follow if
 * stream_trailers_nv() gives any. Returns 0 without eof when nothing is
 * ready: the downstream waits for its resume(). */
size_t stream_pull_resp(struct stream *s, uint8_t *out, size_t len, bool *eof);
/* The same without a copy (downstream HTTP/2, native gRPC, nghttp2's
 * NGHTTP2_DATA_FLAG_NO_COPY): stream_peek_resp says how many of len bytes
 * a DATA frame can take now (0: none queued, or gRPC-Web, or reset: pull
 * instead) and whether they end the body; stream_move_resp then moves
 * them to out, the connection's write buffer, with the accounting of a
 * pull. Returns GR_OK or GR_ERR_NOMEM. */
size_t stream_peek_resp(const struct stream *s, size_t len, bool *eof);
int stream_move_resp(struct stream *s, struct buf *out, size_t n);
/* The trailers to send after the body as name/value pairs (memory of the
 * stream's arena): NULL with *n = 0 when there are none; NULL with *n > 0
 * when they could not be built (the provider then resets the stream). */
nghttp2_nv *stream_trailers_nv(struct stream *s, size_t *n);

/* For request.c: n request bytes were dropped or not queued: their credit
 * goes back to the client. */
void stream_give_back_req(struct stream *s, size_t n);
/* For request.c: request bytes were queued (or the request ended): the
 * upstream may pull them. */
void stream_req_queued(struct stream *s);
/* For request.c: the request's header block is complete (REQ_BODY). */
void stream_headers_read(struct stream *s);
/* For request.c: the call is admitted (route and deadline_us set): the
 * deadline timer starts, and the first attempt. */
void stream_start(struct stream *s);
/* Ends the call with a gRPC status and message: trailers-only if nothing
 * was sent, trailers after the data otherwise; nothing if the answer is
 * already complete. Returns true when the client gets a status, false when
 * it could not be built and the stream was reset instead (the client sees
 * RST_STREAM, or its connection close: never silence). */
bool stream_fail(struct stream *s, enum grpc_status status, const char *msg);
/* Answers with a plain HTTP status and text (CORS preflights, HTTP/1.1
 * requests that are not gRPC-Web); extra (or NULL) are added headers, in
 * the arena. Same return. */
bool stream_reply_http(struct stream *s, const char *status, const char *text, struct hdr_list *extra);
/* Name/value pairs of l for nghttp2, after `extra` free leading entries
 * (arena memory; *n counts all). NULL when out of memory. */
nghttp2_nv *stream_nv(struct stream *s, const struct hdr_list *l, size_t extra, size_t *n);

#endif
