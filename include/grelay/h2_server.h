/* Downstream HTTP/2 (h2c prior knowledge): one client connection and its
 * nghttp2 server session. Owned by the worker; owns its streams. */
#ifndef GRELAY_H2_SERVER_H
#define GRELAY_H2_SERVER_H

#include "grelay/common.h"
#include "grelay/downstream.h"
#include "grelay/h2_hibernate.h"

#include <nghttp2/nghttp2.h>

struct dconn {
    struct downstream base;             /* transport, listener, streams; first member */
    nghttp2_session *h2;                /* server session; NULL while hibernating */
    struct gr_list lru_link;            /* in worker->h2_lru (least recently busy first) if it may hibernate */
    ev_tstamp busy_at;                  /* when a call last began or ended */
    struct h2_frames frames;            /* where the client's bytes stand between frames */
    uint16_t settings_unacked;          /* our SETTINGS frames the client has not acknowledged */
    uint16_t table_acks;                /* ACKs still due up to the one that changes the HPACK table size */
    uint16_t calls_empty;               /* calls begun since waking while the client's HPACK table is empty */
    uint8_t table;                      /* enum h2_table: the client's HPACK encoder table */
    bool reviving;                      /* a new session is being fed the connection's past */
    uint32_t remote_settings[6];        /* while hibernating: the client's SETTINGS 1..6 */
    int32_t remote_window;              /* while hibernating: our connection-level send window */
    int32_t last_stream;                /* while hibernating: the last stream id the client used */
    uint32_t debt;                      /* while reviving: send window to use up (below 65535) */
};

int h2_server_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt);
/* Creates d's nghttp2 session and queues our SETTINGS and connection
 * window (the listener's). Returns GR_OK or GR_ERR_NOMEM. */
int dconn_new_session(struct dconn *d);
/* Takes an accepted socket, its TLS session (or NULL) and the bytes
 * already read from it (a protocol sniffer's); returns NULL (socket
 * closed) on failure. */
struct dconn *dconn_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl,
                           const uint8_t *early, size_t early_len);

#endif
