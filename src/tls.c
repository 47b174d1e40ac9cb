/* OpenSSL contexts for listeners and clusters. */
#include "grelay/tls.h"
#include "grelay/common.h"
#include "grelay/log.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Endpoints of one cluster whose last session is kept; past it, the
 * oldest entry is reused. */
#define MAX_SESSIONS 256

/* The last session an endpoint gave, for the next connection to resume. */
struct tls_session_entry {
    char key[384];     /* endpoint address and server name: "10.0.0.1:443 backend.internal" */
    SSL_SESSION *sess; /* our reference; NULL once taken (TLS 1.3 tickets are used once) */
};

/* A cluster's sessions. Its SSL_CTX is shared by every worker, so the new
 * session callback runs on any of them: the lock guards the table (taken
 * once per upstream connect and once per session received, never on the
 * data path). */
struct tls_sessions {
    pthread_mutex_t lock;                     /* guards all below */
    struct tls_session_entry e[MAX_SESSIONS]; /* entries in use: [0, n) */
    size_t n;                                 /* entries used */
    size_t next;                              /* with n == MAX_SESSIONS: the next one to reuse */
};

/* What an upstream SSL carries for the session callbacks (SSL ex_data). */
struct tls_peer {
    struct tls_sessions *cache; /* its cluster's sessions */
    char key[384];              /* as tls_session_entry.key */
};

/* SSL ex_data index of struct tls_peer (set at the first tls_client_build,
 * on the main thread, before any worker runs). */
static int peer_index = -1;

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, len, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

static int fail(char *err, size_t errlen, const char *what, const char *path)
{
    char reason[256];
    openssl_reason(reason, sizeof(reason));
    snprintf(err, errlen, "%s '%s': %s", what, path ? path : "", reason);
    return GR_ERR_CONFIG;
}

static int set_min_version(SSL_CTX *ctx, const char *v, char *err, size_t errlen)
{
    int version = TLS1_2_VERSION;
    if (v != NULL) {
        if (strcmp(v, "TLSv1.2") == 0)
            version = TLS1_2_VERSION;
        else if (strcmp(v, "TLSv1.3") == 0)
            version = TLS1_3_VERSION;
        else {
            snprintf(err, errlen, "min_version must be TLSv1.2 or TLSv1.3, got '%s'", v);
            return GR_ERR_CONFIG;
        }
    }
    SSL_CTX_set_min_proto_version(ctx, version);
    return GR_OK;
}

/* ALPN: the first of our protocols (in our order) that the client offers. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct gr_tls_server_cfg *t = arg;
    for (size_t i = 0; i < t->n_alpn; i++) {
        size_t l = strlen(t->alpn[i]);
        for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
            if (in[j] == l && j + 1 + l <= inlen && memcmp(in + j + 1, t->alpn[i], l) == 0) {
                *out = in + j + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol: refused cleanly */
}

static bool name_matches(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot != NULL && dot != name && strcasecmp(dot, pattern + 1) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

/* SNI: switch to the context whose names match; otherwise keep the default. */
static int select_cert(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    const struct gr_tls_server_cfg *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->n_server_names; i++)
        for (size_t k = 0; k < t->server_names[i].n_names; k++)
            if (name_matches(t->server_names[i].names[k], name)) {
                SSL_set_SSL_CTX(ssl, t->server_names[i].ctx);
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL skips a TLS 1.3 suite name it does not know, and an empty list
 * turns TLS 1.3 off: both are refused here, each name counted against the
 * suites the context ends up with. */
static int set_ciphersuites(SSL_CTX *ctx, const char *list, char *err, size_t errlen)
{
    size_t named = list[0] != '\0';
    for (const char *p = list; *p != '\0'; p++)
        named += *p == ':';
    size_t got = 0;
    if (SSL_CTX_set_ciphersuites(ctx, list) == 1) {
        STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
        for (int i = 0; all != NULL && i < sk_SSL_CIPHER_num(all); i++)
            got += strcmp(SSL_CIPHER_get_version(sk_SSL_CIPHER_value(all, i)), "TLSv1.3") == 0;
    }
    if (named == 0 || got != named) {
        snprintf(err, errlen,
                 "ciphersuites: '%s' is not a list of TLS 1.3 suites OpenSSL knows, colon-separated (it knows "
                 "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
                 "TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256)",
                 list);
        return GR_ERR_CONFIG;
    }
    return GR_OK;
}

static SSL_CTX *server_ctx(struct gr_tls_server_cfg *t, const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        fail(err, errlen, "cannot create a TLS context", "");
        return NULL;
    }
    if (set_min_version(ctx, t->min_version, err, errlen) != GR_OK)
        goto bad;
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        fail(err, errlen, "ciphers: no cipher OpenSSL knows in", t->ciphers);
        goto bad;
    }
    if (set_ciphersuites(ctx, t->ciphersuites, err, errlen) != GR_OK)
        goto bad;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        fail(err, errlen, "cannot load cert_chain", cert);
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        fail(err, errlen, "cannot load private_key", key);
        goto bad;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        fail(err, errlen, "private_key does not match cert_chain", key);
        goto bad;
    }
    if (t->client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
            fail(err, errlen, "cannot load client_ca", t->client_ca);
            goto bad;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (t->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    SSL_CTX_set_mode(ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 (t->session_tickets ? 0 : SSL_OP_NO_TICKET));
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"grelay", 6);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, t);
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_server_build(struct gr_tls_server_cfg *t, bool grpc_web, char *err, size_t errlen)
{
    static const char *const h2_only[] = {"h2"};
    static const char *const h2_h1[] = {"h2", "http/1.1"};
    if (t->n_alpn == 0) {
        t->alpn = grpc_web ? (const char **)h2_h1 : (const char **)h2_only;
        t->n_alpn = grpc_web ? 2 : 1;
    }
    for (size_t i = 0; i < t->n_alpn; i++) {
        if (strcmp(t->alpn[i], "h2") != 0 && strcmp(t->alpn[i], "http/1.1") != 0) {
            snprintf(err, errlen, "alpn: '%s' is not h2 or http/1.1", t->alpn[i]);
            return GR_ERR_CONFIG;
        }
        if (strcmp(t->alpn[i], "http/1.1") == 0 && !grpc_web) {
            snprintf(err, errlen, "alpn: http/1.1 needs grpc_web: true on the listener (it carries gRPC-Web)");
            return GR_ERR_CONFIG;
        }
    }
    t->ctx = server_ctx(t, t->cert_chain, t->private_key, err, errlen);
    if (t->ctx == NULL)
        return GR_ERR_CONFIG;
    for (size_t i = 0; i < t->n_server_names; i++) {
        struct gr_sni_cert_cfg *sn = &t->server_names[i];
        sn->ctx = server_ctx(t, sn->cert_chain, sn->private_key, err, errlen);
        if (sn->ctx == NULL)
            return GR_ERR_CONFIG;
    }
    if (t->n_server_names > 0) {
        SSL_CTX_set_tlsext_servername_callback(t->ctx, select_cert);
        SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
    }
    return GR_OK;
}

static void free_peer(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static struct tls_session_entry *find_session(struct tls_sessions *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].key, key) == 0)
            return &c->e[i];
    return NULL;
}

/* OpenSSL got a session from an upstream (after the handshake; TLS 1.3
 * sends tickets later, maybe several): it replaces the endpoint's last.
 * Returns 1: the reference is ours. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_peer *p = SSL_get_ex_data(ssl, peer_index);
    if (p == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    struct tls_sessions *c = p->cache;
    pthread_mutex_lock(&c->lock);
    struct tls_session_entry *e = find_session(c, p->key);
    if (e == NULL) {
        e = c->n < MAX_SESSIONS ? &c->e[c->n++] : &c->e[c->next++ % MAX_SESSIONS];
        snprintf(e->key, sizeof(e->key), "%s", p->key);
    }
    SSL_SESSION *old = e->sess;
    e->sess = sess;
    pthread_mutex_unlock(&c->lock);
    SSL_SESSION_free(old);
    return 1;
}

/* Offers the endpoint's last session to ssl. A TLS 1.3 session is taken
 * (RFC 8446 C.4: a ticket once); a TLS 1.2 one stays for other connections
 * (OpenSSL never changes a session once handed out: it copies it first). */
static void offer_session(struct tls_peer *p, SSL *ssl)
{
    struct tls_sessions *c = p->cache;
    pthread_mutex_lock(&c->lock);
    struct tls_session_entry *e = find_session(c, p->key);
    SSL_SESSION *sess = e != NULL ? e->sess : NULL;
    if (sess != NULL && SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION)
        e->sess = NULL; /* our reference moves to this connection */
    else if (sess != NULL)
        SSL_SESSION_up_ref(sess);
    pthread_mutex_unlock(&c->lock);
    if (sess == NULL)
        return;
    if (SSL_SESSION_is_resumable(sess))
        (void)SSL_set_session(ssl, sess); /* takes a reference of its own */
    SSL_SESSION_free(sess);
}

/* Says at debug level whether an upstream handshake resumed a session. */
static void on_info(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_DONE) || log_threshold < LOG_DEBUG)
        return;
    const struct tls_peer *p = SSL_get_ex_data(ssl, peer_index);
    log_debug("upstream %s: %s, TLS session %s", p != NULL ? p->key : "?", SSL_get_version(ssl),
              SSL_session_reused(ssl) ? "resumed" : "new (full handshake)");
}

int tls_client_build(struct gr_tls_client_cfg *t, char *err, size_t errlen)
{
    if (peer_index < 0)
        peer_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_peer);
    t->sessions = calloc(1, sizeof(*t->sessions));
    if (peer_index < 0 || t->sessions == NULL) {
        snprintf(err, errlen, "out of memory");
        return GR_ERR_NOMEM;
    }
    pthread_mutex_init(&t->sessions->lock, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return fail(err, errlen, "cannot create a TLS context", "");
    t->ctx = ctx;
    if (set_min_version(ctx, t->min_version, err, errlen) != GR_OK)
        return GR_ERR_CONFIG;
    if (t->verify) {
        int ok = t->ca ? SSL_CTX_load_verify_locations(ctx, t->ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1)
            return fail(err, errlen, "cannot load ca", t->ca ? t->ca : "(system default)");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (t->cert_chain != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_chain) != 1)
            return fail(err, errlen, "cannot load cert_chain", t->cert_chain);
        if (t->private_key == NULL) {
            snprintf(err, errlen, "cert_chain needs private_key");
            return GR_ERR_CONFIG;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, t->private_key, SSL_FILETYPE_PEM) != 1)
            return fail(err, errlen, "cannot load private_key", t->private_key);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return fail(err, errlen, "private_key does not match cert_chain", t->private_key);
    }
    static const unsigned char h2[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, h2, sizeof(h2));
    SSL_CTX_set_mode(ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    /* Sessions go to on_new_session only: OpenSSL's own cache is never
     * looked up on a client, and would keep up to 20,480 of them. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_info_callback(ctx, on_info);
    return GR_OK;
}

void tls_server_free(struct gr_tls_server_cfg *t)
{
    for (size_t i = 0; i < t->n_server_names; i++)
        SSL_CTX_free(t->server_names[i].ctx);
    SSL_CTX_free(t->ctx);
    t->ctx = NULL;
}

void tls_client_free(struct gr_tls_client_cfg *t)
{
    SSL_CTX_free(t->ctx);
    t->ctx = NULL;
    if (t->sessions != NULL) {
        for (size_t i = 0; i < t->sessions->n; i++)
            SSL_SESSION_free(t->sessions->e[i].sess);
        pthread_mutex_destroy(&t->sessions->lock);
        free(t->sessions);
        t->sessions = NULL;
    }
}

SSL *tls_client_new(const struct gr_tls_client_cfg *t, const char *host, const char *addr)
{
    SSL *ssl = SSL_new(t->ctx);
    if (ssl == NULL)
        return NULL;
    const char *name = t->sni ? t->sni : host;
    struct tls_peer *p = malloc(sizeof(*p));
    if (p != NULL) {
        p->cache = t->sessions;
        snprintf(p->key, sizeof(p->key), "%s %s", addr, name);
        if (SSL_set_ex_data(ssl, peer_index, p) != 1)
            free(p);
        else
            offer_session(p, ssl);
    }
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, name);
    if (t->verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name) : SSL_set1_host(ssl, name);
        if (ok != 1) {
            /* Out of memory: without the name check the chain alone would be
             * verified (fail-open); no connection instead. */
            SSL_free(ssl);
            return NULL;
        }
    }
    return ssl;
}

const char *tls_error(SSL *ssl, int rc, char *buf, size_t len)
{
    int e = SSL_get_error(ssl, rc);
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
        snprintf(buf, len, "TLS: certificate verify failed: %s", X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return buf;
    }
    unsigned long ee = ERR_peek_last_error();
    if (ee != 0) {
        char reason[200];
        ERR_error_string_n(ee, reason, sizeof(reason));
        snprintf(buf, len, "TLS: %s", reason);
    } else if (e == SSL_ERROR_SYSCALL) {
        snprintf(buf, len, "TLS: the peer closed the connection during the handshake");
    } else {
        snprintf(buf, len, "TLS: error %d", e);
    }
    ERR_clear_error();
    return buf;
}
