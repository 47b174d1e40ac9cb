/* Downstream HTTP/1.1: what browsers speak to a cleartext origin, carrying
 * gRPC-Web (and CORS preflights). Parsed with http-parser; keep-alive,
 * chunked responses, one request at a time. Owned by the worker; owns the
 * stream of the request in progress. */
#ifndef GRELAY_H1_SERVER_H
#define GRELAY_H1_SERVER_H

#include "grelay/config.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* Takes an accepted socket, its TLS session (or NULL) and the bytes
 * already read from it. */
void h1_server_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl, const uint8_t *early,
                      size_t early_len);

#endif
