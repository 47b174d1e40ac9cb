/* The client side of streams: an HTTP/2 session (h2_server) or an HTTP/1.1
 * connection (h1_server, gRPC-Web from browsers). stream.c talks to its
 * client only through these operations; the connection tells its streams
 * through stream.h. Owned by the worker; owns its streams.
 * (Downstream is the client side, as in Envoy; nghttpx says the opposite.) */
#ifndef GRELAY_DOWNSTREAM_H
#define GRELAY_DOWNSTREAM_H

#include "grelay/common.h"
#include "grelay/conn.h"

#include <nghttp2/nghttp2.h>

struct downstream;
struct stream;

struct downstream_ops {
    /* Sends response headers (nva[0] is :status). end_stream ends the
     * response; otherwise its body is pulled with stream_pull_resp(). */
    int (*respond)(struct downstream *d, struct stream *s, const nghttp2_nv *nva, size_t n, bool end_stream);
    /* More of the response body (or its end) can be pulled. */
    void (*resume)(struct downstream *d, struct stream *s);
    /* n request bytes, counted as they came on the wire, were taken: the
     * client may send more. s == NULL: the stream is gone, only the
     * connection's share comes back. */
    void (*consume)(struct downstream *d, struct stream *s, size_t n);
    /* Aborts the stream (RST_STREAM; an HTTP/1.1 connection just closes).
     * Never fails: when even that cannot be queued, the connection closes
     * at the end of the loop iteration (broken), so no client is left
     * waiting in silence. */
    void (*reset)(struct downstream *d, struct stream *s, uint32_t h2_error);
    /* Drains the connection (a SIGTERM, its max_connection_age). cut NULL
     * begins it: HTTP/2 gets the two-phase GOAWAY, HTTP/1.1 `Connection:
     * close` on its next response (an idle one closes now); the connection
     * closes once its last call ends. cut set: the calls still open end now
     * with UNAVAILABLE and that message, and the connection closes once
     * they are written. Returns the calls cut. */
    size_t (*drain)(struct downstream *d, const char *cut);
};

struct downstream {
    struct conn io;                    /* transport; first member */
    const struct downstream_ops *ops;  /* the protocol's operations (HTTP/2 or HTTP/1.1) */
    const struct gr_listener_cfg *cfg; /* the listener it came in on */
    bool http1;                        /* HTTP/1.1 (gRPC-Web only), not HTTP/2 */
    bool broken;                       /* close at the next flush, whatever is pending */
    uint64_t held;                     /* bytes its calls hold: responses queued, replay copies (stream.c);
                                          past cfg->connection_buffer new streams are refused */
    uint32_t calls;                    /* calls begun on it (max_requests_per_connection) */
    ev_tstamp cut_at;                  /* a reload removed its listener: it drains, and its calls still open
                                          then are cut at this time (proxy.c); 0: not */
    uint64_t resp_windows;             /* its calls' upstream stream windows added up (stream.c): they grow
                                          only while this stays within cfg->connection_buffer */
    char peer[56];                     /* the client's "ip:port", read once for the access log; "" until then */
    struct gr_list streams;            /* its calls */
    struct gr_list link;               /* in worker->dconns */
};

/* Sets up the common part and registers d with its worker (and counts
 * it in its listener's connections by protocol). */
void downstream_init(struct downstream *d, struct worker *w, const struct gr_listener_cfg *l,
                     const struct downstream_ops *ops, bool http1);
/* The connection closed: it leaves the worker's list (its streams are
 * closed by stream_close_all). */
void downstream_fini(struct downstream *d);
/* A call began on d: at the listener's max_requests_per_connection, d
 * drains (HTTP/2: the two-phase GOAWAY; HTTP/1.1: Connection: close on
 * this response), as at max_connection_age. */
void downstream_call_began(struct downstream *d);
/* Asks for d to close at its next flush. */
void downstream_break(struct downstream *d);

#endif
