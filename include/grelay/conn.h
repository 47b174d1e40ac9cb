/* A non-blocking socket transport shared by both sides: reading (in clear
 * or through TLS, one loop) into the worker's buffer, a bounded write
 * queue flushed once per loop iteration, connect for upstreams, and a close
 * that defers the free to the end of the loop iteration. The protocol on
 * top (an nghttp2 session, HTTP/1.1, the protocol sniffer) plugs in through
 * conn_ops. Owned by the struct that embeds it (dconn, h1conn, upconn,
 * sniff). */
#ifndef GRELAY_CONN_H
#define GRELAY_CONN_H

#include "grelay/buf.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/conn_timer.h"
#include "grelay/worker.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <sys/types.h>

struct conn;

/* Bytes pulled from the protocol into wbuf before pulls stop for the socket. */
#define WBUF_HIGH (64 * 1024)
/* Frames queued in the protocol (besides wbuf) past which a client
 * connection whose socket refuses bytes is no longer read. */
#define CONN_BACKLOG_HIGH 256

struct conn_ops {
    /* Bytes arrived. Returns 0, or a negative error to close the connection. */
    int (*on_read)(struct conn *c, const uint8_t *data, size_t len);
    /* Next bytes to send, valid until the next call: returns their count,
     * 0 when there is nothing to send, or a negative error. */
    ssize_t (*pull)(struct conn *c, const uint8_t **data);
    /* True when the protocol is finished and the connection may close. */
    bool (*done)(struct conn *c);
    /* The connection is ready: an outgoing connect completed, or a TLS
     * handshake did (may be NULL when neither happens). */
    void (*on_connect)(struct conn *c);
    /* The connection is closing: err is GR_OK for a clean end, why says
     * what happened. Release protocol state and tell the streams. */
    void (*on_close)(struct conn *c, int err, const char *why);
    /* Free the owner. Called at the end of the loop iteration. */
    void (*destroy)(struct conn *c);
    /* One of the connection's deadlines (c->timer) passed (NULL for a
     * protocol that sets none). */
    void (*on_deadline)(struct conn *c, enum conn_timer_kind kind);
    /* Frames the protocol has queued besides wbuf (nghttp2's outbound
     * queue), for the output cap of accepted connections (may be NULL). */
    size_t (*backlog)(struct conn *c);
};

/* Where a connection stands; it only moves forward (CLOSED is final). */
enum conn_state {
    CONN_CONNECTING = 0, /* outgoing connect() in progress */
    CONN_HANDSHAKE = 1,  /* TLS handshake in progress */
    CONN_OPEN = 2,       /* reading and writing through the protocol */
    CONN_CLOSED = 3,     /* socket closed, on_close called, destroy queued */
};

struct conn {
    int fd;                     /* the socket, -1 once closed */
    ev_io rio;                  /* readable */
    ev_io wio;                  /* writable (connect completion, blocked writes) */
    struct worker *w;           /* the worker whose loop drives it */
    const struct conn_ops *ops; /* the protocol on top */
    struct buf wbuf;            /* bytes pulled from the protocol but not yet written */
    SSL *ssl;                   /* TLS, or NULL for cleartext */
    struct gr_task flush;       /* in worker->dirty while a flush is due */
    struct gr_task reap;        /* in worker->reap once closed: destroy */
    struct conn_timer timer;    /* its deadlines (idle, headers, write, keepalive); stopped on close */
    enum conn_state state;      /* see enum conn_state */
    bool read_paused;           /* the protocol stopped reading (conn_pause_read) */
    bool out_paused;            /* reading stopped: the peer does not take our output (out_cap) */
    bool out_cap;               /* an accepted (client) connection: stop reading it while its output waits */
    bool hostile;               /* close once the protocol is done, whether its last bytes left or not */
    bool tls_read_for_write;    /* SSL_write wants a read first: one read happens even while paused */
};

/* Adopts an accepted, non-blocking socket and starts reading. Its output
 * is capped: while the socket refuses bytes and WBUF_HIGH of them wait
 * (or the protocol's backlog passes CONN_BACKLOG_HIGH frames), reading
 * stops, until the output has left (docs/limits.md, HTTP/2 abuse). */
void conn_init_accepted(struct conn *c, struct worker *w, int fd, const struct conn_ops *ops);
/* Starts a non-blocking connect; with ssl, a TLS handshake follows it
 * (ssl is owned by c from now on, even on failure). Returns 0 or GR_ERR_IO
 * (errno set). */
int conn_connect(struct conn *c, struct worker *w, const struct gr_addr *to, const struct conn_ops *ops, SSL *ssl);
/* TCP liveness of a socket (upstream connections): SO_KEEPALIVE with a
 * first probe after idle_s seconds of silence, then one every intvl_s, cnt
 * of them; and TCP_USER_TIMEOUT: bytes or probes unacknowledged for
 * user_timeout_ms abort the connection (the next read or write fails with
 * ETIMEDOUT). Best effort: a failing setsockopt is logged at debug level. */
void conn_set_liveness(struct conn *c, uint32_t idle_s, uint32_t intvl_s, uint32_t cnt, uint32_t user_timeout_ms);
/* Runs a server-side TLS handshake on an accepted connection; on_connect
 * follows it. c owns ssl. */
void conn_start_tls(struct conn *c, SSL *ssl);
/* Takes over a TLS session whose handshake another conn finished. */
void conn_adopt_tls(struct conn *c, SSL *ssl);
/* Stops and restarts reading (backpressure on an HTTP/1.1 request body).
 * No read follows a pause, not even in the same wake-up. */
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
/* The peer is hostile (an abuse budget ran out): once the protocol is done
 * (its GOAWAY pulled), the connection closes at once, even if the socket
 * has not taken the last bytes: a peer that does not read holds nothing. */
void conn_set_hostile(struct conn *c);
/* Asks for a flush at the end of this loop iteration (writes are batched). */
void conn_want_flush(struct conn *c);
/* Writes what the protocol has now; closes on error or when done. */
void conn_flush(struct conn *c);
/* Closes once: stops watchers, closes the socket, calls on_close, and
 * queues destroy for the end of the loop iteration. */
void conn_close(struct conn *c, int err, const char *why);

#endif
