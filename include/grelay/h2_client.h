/* Upstream HTTP/2: one connection to an endpoint and its nghttp2 client
 * session. Owned by its pool; refers to the streams it carries. */
#ifndef GRELAY_H2_CLIENT_H
#define GRELAY_H2_CLIENT_H

#include "grelay/common.h"
#include "grelay/conn.h"

#include <nghttp2/nghttp2.h>

struct pool;

struct upconn {
    struct conn io;        /* transport; first member */
    struct pool *pool;     /* owner */
    nghttp2_session *h2;   /* client session */
    struct gr_list link;   /* in pool->conns */
    struct gr_list streams;/* streams attached to it */
    uint32_t n_streams;    /* attached streams */
    ev_timer connect_timer;/* bounds connect + SETTINGS */
    bool ready;            /* the peer's SETTINGS arrived */
    bool draining;         /* GOAWAY received or sent: no new streams */
};

int h2_client_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt);
/* Opens a connection for the pool; returns NULL (errno set) on failure. */
struct upconn *upconn_open(struct pool *p);
/* The nghttp2 data provider of request bodies going upstream. */
ssize_t upconn_req_read(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length, uint32_t *flags,
                        nghttp2_data_source *src, void *user_data);
/* Streams it may still take. */
uint32_t upconn_free_slots(const struct upconn *u);
/* A stream left it: update counts, maybe close when draining. */
void upconn_stream_detached(struct upconn *u);

#endif
