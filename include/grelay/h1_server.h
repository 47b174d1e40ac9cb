/* Downstream HTTP/1.1: what browsers speak to a cleartext origin, carrying
 * gRPC-Web (and CORS preflights). Parsed with http-parser; keep-alive,
 * chunked responses, one request at a time. Owned by the worker; owns the
 * stream of the request in progress. */
#ifndef GRELAY_H1_SERVER_H
#define GRELAY_H1_SERVER_H

#include "grelay/config.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* Takes an accepted socket, its TLS session (or NULL), the bytes already
 * read from it and when it was accepted (ev_now's clock; 0: now), from
 * which request_headers_timeout counts. The socket's slot of
 * max_connections (worker_conn_take) goes with it. */
void h1_server_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl, const uint8_t *early,
                      size_t early_len, ev_tstamp accepted);

#endif
