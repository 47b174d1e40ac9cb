/* Downstream HTTP/2 (h2c prior knowledge): one client connection and its
 * nghttp2 server session. Owned by the worker; owns its streams. */
#ifndef GRELAY_H2_SERVER_H
#define GRELAY_H2_SERVER_H

#include "grelay/common.h"
#include "grelay/downstream.h"

#include <nghttp2/nghttp2.h>

struct dconn {
    struct downstream base;             /* transport, listener, streams; first member */
    nghttp2_session *h2;                /* server session */
};

int h2_server_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt);
/* Takes an accepted socket, its TLS session (or NULL) and the bytes
 * already read from it (a protocol sniffer's); returns NULL (socket
 * closed) on failure. */
struct dconn *dconn_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl,
                           const uint8_t *early, size_t early_len);

#endif
