/* One call: the state machine joining a downstream stream to an upstream one.
 * Owned by its dconn; refers to (never owns) its upconn. Freed when the
 * downstream half closes; the upstream half is reset and detached first. */
#ifndef GRELAY_STREAM_H
#define GRELAY_STREAM_H

#include "grelay/arena.h"
#include "grelay/buf.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/grpc.h"
#include "grelay/grpcweb.h"
#include "grelay/headers.h"

#include <ev.h>
#include <nghttp2/nghttp2.h>

struct downstream;
struct worker;
struct upconn;
struct pool;

struct stream {
    struct downstream *down;        /* the client connection that owns it */
    int32_t id;                     /* downstream stream id */
    struct arena arena;             /* headers and strings of this call */
    struct hdr_list req_hdrs;       /* regular request headers */
    struct hdr_list req_trailers;   /* request trailers (rare in gRPC) */
    struct hdr_list resp_hdrs;      /* response headers from upstream */
    struct hdr_list resp_trailers;  /* response trailers, from upstream or made here */
    struct gr_hdr method;           /* pseudo headers (value NULL when absent), in the arena */
    struct gr_hdr path;
    struct gr_hdr authority;        /* :authority, or host when absent */
    struct gr_hdr grpc_timeout;     /* the client's grpc-timeout, replaced upstream by the time left */
    uint64_t deadline_us;           /* absolute, on now_us()'s clock; 0 = no deadline */
    ev_timer deadline_timer;        /* fires at the deadline */
    const struct gr_route_cfg *route; /* chosen route */
    struct grpcweb *web;            /* gRPC-Web codec, or NULL for native gRPC */
    const struct gr_cors_cfg *cors; /* CORS policy granting this call's Origin, or NULL */
    struct gr_hdr origin;           /* the granted Origin */
    size_t req_wire_unacked;        /* -text: request bytes as sent, not yet given back */
    uint64_t req_body_bytes;        /* gRPC-Web: request body bytes seen */
    struct pool *pool;              /* pool of the chosen endpoint */
    struct upconn *up;              /* upstream connection while attached */
    int32_t up_id;                  /* upstream stream id, 0 before submit */
    struct buf req;                 /* request bytes not yet taken upstream, and while
                                       replayable also those already sent */
    size_t req_sent;                /* bytes of req handed to the current attempt (replay mode) */
    size_t req_acked;               /* bytes at the head of req already given back to the client's window */
    ev_timer attempt_timer;         /* the backoff before the next attempt, or the per-try timeout */
    size_t last_ep;                 /* endpoint index of the latest attempt */
    uint8_t retries;                /* configured retries made */
    uint8_t transparent_retries;    /* transparent retries made */
    struct buf resp;                /* response bytes not yet taken downstream */
    struct gr_list down_link;       /* in down->streams */
    struct gr_list up_link;         /* in up->streams, or pool->waiting */
    int resp_status;                /* upstream :status */
    bool req_headers_done;          /* request HEADERS complete */
    bool req_ended;                 /* client sent END_STREAM */
    bool req_deferred;              /* upstream data provider waits for bytes */
    bool resp_started;              /* response HEADERS submitted downstream */
    bool resp_headers_done;         /* upstream response HEADERS complete */
    bool resp_ended;                /* nothing more comes from upstream */
    bool resp_deferred;             /* the downstream waits for a resume() */
    bool up_closed;                 /* upstream stream closed or never to be */
    bool headers_too_big;           /* request headers passed the listener's limit */
    bool waiting;                   /* in pool->waiting */
    bool replay;                    /* the request can still be sent again (retries) */
    bool backing_off;               /* attempt_timer is a backoff, not a per-try timeout */
    bool up_headers_sent;           /* the current attempt's HEADERS went to the upstream */
    struct stream *next_free;       /* in the worker's cache of freed streams */
    _Alignas(16) unsigned char arena_first[1536]; /* the arena's first block: most calls need no malloc */
};

struct stream *stream_new(struct downstream *d, int32_t id);

/* Downstream events (from h2_server). */
int stream_on_req_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                         size_t valuelen);
void stream_on_req_headers_done(struct stream *s);
void stream_on_req_data(struct stream *s, const uint8_t *data, size_t len);
void stream_on_req_end(struct stream *s);
/* The downstream stream closed: resets the upstream half and frees s. */
void stream_on_down_close(struct stream *s, uint32_t error_code);
/* Copies up to len bytes of the response body into out (len >= 1). Sets
 * *eof once the body is complete; HTTP trailers then follow if
 * stream_has_trailers(). Returns 0 without eof when nothing is ready: the
 * downstream waits for its resume(). */
size_t stream_pull_resp(struct stream *s, uint8_t *out, size_t len, bool *eof);
/* Whether trailers must follow the body as HTTP trailers. */
bool stream_has_trailers(const struct stream *s);
/* Those trailers as name/value pairs (memory of the stream's arena), or
 * NULL with *n = 0 when there are none to send. */
nghttp2_nv *stream_trailers_nv(struct stream *s, size_t *n);

/* Copies up to len bytes of the request body into out for the upstream,
 * giving the client's window back as they go. Sets *eof once the body is
 * complete (request trailers then follow, if any). 0 without eof: nothing
 * ready; the upstream provider waits to be resumed. */
size_t stream_pull_req(struct stream *s, uint8_t *out, size_t len, bool *eof);
/* Request trailers as name/value pairs, or NULL with *n = 0. */
nghttp2_nv *stream_req_trailers_nv(struct stream *s, size_t *n);

/* Pool events. */
/* Sends the request on upconn u; returns 0 or a negative error. */
int stream_attach_upstream(struct stream *s, struct upconn *u);
/* No connection can be had: ends the call with status and message. */
void stream_fail(struct stream *s, enum grpc_status status, const char *msg);

/* Frees the worker's cached streams that no call used since the last trim
 * (the idle sweep calls it); returns how many. */
size_t stream_cache_trim(struct worker *w);

/* Upstream events (from h2_client). */
int stream_on_resp_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen);
void stream_on_resp_headers_done(struct stream *s, bool end_stream);
void stream_on_resp_data(struct stream *s, const uint8_t *data, size_t len);
void stream_on_resp_end(struct stream *s);
/* The upstream stream closed (error_code from RST_STREAM, or NO_ERROR). */
void stream_on_up_close(struct stream *s, uint32_t error_code);
/* The upstream connection is gone; why names the cause; unsent is true when
 * the request cannot have reached the application (safe to retry). */
void stream_on_up_lost(struct stream *s, const char *why, bool unsent);

#endif
