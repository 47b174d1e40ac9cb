/* TLS with OpenSSL 3: contexts built from the config at load time (so a bad
 * certificate is a config error), SNI and ALPN on listeners, verification
 * and ALPN h2 towards upstreams. The record layer itself lives in conn.c.
 * The TLS settings of a listener or cluster are declared here, not in
 * config.h: config.c fills them from YAML and calls the builders below, so
 * config depends on tls and never the reverse. */
#ifndef GRELAY_TLS_H
#define GRELAY_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A certificate chosen by SNI. */
struct gr_sni_cert_cfg {
    const char **names;      /* "api.example.com" or "*.example.com" (one label); lower-cased */
    size_t n_names;          /* entries in names, at least 1 */
    const char *cert_chain;  /* PEM file */
    const char *private_key; /* PEM file */
    void *ctx;               /* SSL_CTX, built at load */
};

/* A listener's defaults prefer AES-128-GCM, as Envoy's (BoringSSL's),
 * nghttpx's and Go's do; OpenSSL's own put AES-256-GCM first: four more AES
 * rounds a block and SHA-384 in every key derivation, for no strength that
 * a 128-bit-secure handshake lacks (docs/design-notes.md, "TLS defaults").
 * TLS 1.2: Envoy's server list, ECDHE with an AEAD only. */
#define GR_TLS_CIPHERS                                                                                                 \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"                         \
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define GR_TLS_CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* TLS on a listener. */
struct gr_tls_server_cfg {
    bool set;                 /* a tls: block is written: the listener speaks TLS */
    const char *cert_chain;   /* PEM: the default certificate */
    const char *private_key;  /* PEM: the key of cert_chain */
    const char **alpn;        /* protocols offered, preferred first; default h2 (+ http/1.1 with grpc_web) */
    size_t n_alpn;            /* entries in alpn (filled with the default by tls_server_build) */
    const char *min_version;  /* TLSv1.2 or TLSv1.3; NULL: TLSv1.2 */
    const char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax); default GR_TLS_CIPHERS */
    const char *ciphersuites; /* TLS 1.3 suites, colon-separated; default GR_TLS_CIPHERSUITES */
    const char *client_ca;    /* verify client certificates against this; NULL: none is asked for */
    bool require_client_cert; /* only with client_ca: refuse a client that sends no certificate (without
                                  * client_ca it does nothing, so no certificate is required) */
    struct gr_sni_cert_cfg *server_names; /* certificates by SNI, first match wins; others get cert_chain */
    size_t n_server_names;                /* entries in server_names */
    uint64_t handshake_timeout_ms;        /* the client has this long to finish the handshake; default 10 s */
    bool session_tickets;                 /* issue TLS session tickets (resumption); default true */
    void *ctx;                            /* SSL_CTX for the default certificate, built at load */
};

/* TLS to a cluster's endpoints. */
struct gr_tls_client_cfg {
    bool set;                      /* a tls: block is written: connect to the endpoints with TLS */
    const char *sni;               /* name sent and verified; default: the endpoint's host */
    const char *ca;                /* PEM bundle to verify the server; default: the system's */
    const char *cert_chain;        /* client certificate, for mTLS */
    const char *private_key;       /* PEM: the key of cert_chain (needed with it) */
    bool verify;                   /* verify the server's certificate and name (default true) */
    const char *min_version;       /* TLSv1.2 or TLSv1.3; NULL: TLSv1.2 */
    void *ctx;                     /* SSL_CTX, built at load */
    struct tls_sessions *sessions; /* the last resumable session per endpoint, shared by the workers (tls.c) */
};

/* Builds t->ctx (and one per server_names entry). alpn defaults to h2, plus
 * http/1.1 with grpc_web. Returns 0, or GR_ERR_CONFIG with a message naming
 * the file and OpenSSL's reason in err. */
int tls_server_build(struct gr_tls_server_cfg *t, bool grpc_web, char *err, size_t errlen);
/* Builds t->ctx for upstream connections (ALPN h2). */
int tls_client_build(struct gr_tls_client_cfg *t, char *err, size_t errlen);
void tls_server_free(struct gr_tls_server_cfg *t);
void tls_client_free(struct gr_tls_client_cfg *t);
/* A new client SSL for an endpoint: SNI and the name to verify are t->sni,
 * or host (an IP literal is verified as an address and sent no SNI).
 * addr names the endpoint ("10.0.0.1:443"): the last session the cluster
 * got from it (any worker's) is offered for resumption, and a session it
 * gives on this connection is kept for the next one. Any thread. */
SSL *tls_client_new(const struct gr_tls_client_cfg *t, const char *host, const char *addr);
/* Why the last TLS operation on ssl failed, for messages. */
const char *tls_error(SSL *ssl, int rc, char *buf, size_t len);

#endif
