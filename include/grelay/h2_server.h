/* Downstream HTTP/2 (h2c prior knowledge): one client connection and its
 * nghttp2 server session. Owned by the worker; owns its streams. */
#ifndef GRELAY_H2_SERVER_H
#define GRELAY_H2_SERVER_H

#include "grelay/common.h"
#include "grelay/conn.h"

#include <nghttp2/nghttp2.h>

struct dconn {
    struct conn io;                     /* transport; first member */
    const struct gr_listener_cfg *cfg;  /* the listener it came in on */
    nghttp2_session *h2;                /* server session */
    struct gr_list streams;             /* its calls */
    struct gr_list link;                /* in worker->dconns */
};

int h2_server_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt);
/* Takes an accepted socket; returns NULL (socket closed) on failure. */
struct dconn *dconn_accept(struct worker *w, const struct gr_listener_cfg *l, int fd);

#endif
