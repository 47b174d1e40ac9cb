/* TLS with OpenSSL 3: contexts built from the config at load time (so a bad
 * certificate is a config error), SNI and ALPN on listeners, verification
 * and ALPN h2 towards upstreams. The record layer itself lives in conn.c. */
#ifndef GRELAY_TLS_H
#define GRELAY_TLS_H

#include "grelay/config.h"

#include <openssl/ssl.h>
#include <stddef.h>

/* Builds t->ctx (and one per server_names entry). alpn defaults to h2, plus
 * http/1.1 with grpc_web. Returns 0, or GR_ERR_CONFIG with a message naming
 * the file and OpenSSL's reason in err. */
int tls_server_build(struct gr_tls_server_cfg *t, bool grpc_web, char *err, size_t errlen);
/* Builds t->ctx for upstream connections (ALPN h2). */
int tls_client_build(struct gr_tls_client_cfg *t, char *err, size_t errlen);
void tls_server_free(struct gr_tls_server_cfg *t);
void tls_client_free(struct gr_tls_client_cfg *t);
/* A new client SSL for an endpoint: SNI and the name to verify are t->sni,
 * or host (an IP literal is verified as an address and sent no SNI). */
SSL *tls_client_new(const struct gr_tls_client_cfg *t, const char *host);
/* Why the last TLS operation on ssl failed, for messages. */
const char *tls_error(SSL *ssl, int rc, char *buf, size_t len);

#endif
