/* Downstream HTTP/2 (h2c prior knowledge, or h2 over TLS): one client
 * connection and its nghttp2 server session, which hibernates when idle
 * (h2_hibernate.h). Owned by the worker; owns its streams. */
#ifndef GRELAY_H2_SERVER_H
#define GRELAY_H2_SERVER_H

#include "grelay/common.h"
#include "grelay/config.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* The worker's share of downstream HTTP/2 (w->h2s): session callbacks and
 * options, the slab client connections come from, and the hibernation
 * pass. Returns GR_OK or GR_ERR_NOMEM. */
int h2_server_worker_init(struct worker *w);
void h2_server_worker_destroy(struct worker *w);
/* w->cfg changed (a reload): the hibernation pass follows its listeners'
 * shortest hibernate_after (a connection of an older snapshot with a
 * shorter one sleeps at the pass, within 1.5x of the new shortest). */
void h2_server_worker_reload(struct worker *w);
/* With no client connection left, gives the connection slabs back (tests
 * and fuzzing use it between inputs, for allocations that repeat). */
void h2_server_worker_trim(struct worker *w);
/* Takes an accepted socket, its TLS session (or NULL), the bytes already
 * read from it (a protocol sniffer's) and when it was accepted (ev_now's
 * clock; 0: now), from which request_headers_timeout counts; false (socket
 * closed) on failure. The socket's slot of max_connections
 * (worker_conn_take) goes with it. */
bool h2_server_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl, const uint8_t *early,
                      size_t early_len, ev_tstamp accepted);

#endif
