/* A load generator for connection churn and TLS handshakes (nghttp2 +
 * OpenSSL, blocking sockets, one thread per connection slot).
 *
 * THREADS threads each loop until SECONDS are up: connect, in the TLS modes
 * a handshake (ALPN h2; full, or resuming the last session the server gave
 * this thread), one unary gRPC call to /bench.Echo/Unary with a SIZE-byte
 * message (status 200, grpc-status 0 and every echoed byte checked), close.
 * h2load cannot do this: its connections make all their calls and never
 * reconnect, and it never resumes a TLS session. Prints one line:
 *
 *   conns N resumed R errors E seconds S
 *
 * where N counts the connections whose call succeeded, R those of them whose
 * handshake resumed a session, E the connections that failed.
 *
 * Usage: conn_load HOST PORT THREADS SECONDS SIZE MODE [COUNT]
 *   MODE: h2c | tls1.2 | tls1.3 | tls1.2-resume | tls1.3-resume
 *   COUNT: each thread stops after COUNT connections (made or failed), or
 *   at SECONDS, whichever comes first (tests/integration/test_bench_tools.py
 *   asks for exact counts this way); none: SECONDS alone.
 * The resume modes offer the last session (ticket or session ID, whichever
 * the server gave) on every connection but a thread's first. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/h2_io.h"

/* One connection slot: its thread, TLS context and counts. */
struct worker {
    pthread_t th;
    SSL_CTX *ctx;      /* NULL in h2c mode */
    SSL_SESSION *sess; /* the last session the server gave (resume modes) */
    uint64_t conns;    /* connections whose call succeeded */
    uint64_t resumed;  /* of those, handshakes that resumed */
    uint64_t errors;   /* connections that failed */
};

/* The one call of a connection, as the callbacks see it. */
struct call {
    size_t tx_off;  /* request bytes handed to nghttp2 */
    size_t rx_off;  /* response message bytes checked */
    bool status_ok; /* :status 200 seen */
    bool grpc_ok;   /* grpc-status 0 seen */
    bool bad;       /* a wrong byte or header */
    bool closed;    /* the stream ended */
};

static struct sockaddr_in target;
static char authority[64];
static uint8_t *msg; /* the request message: 5-byte gRPC prefix + payload */
static size_t msg_len;
static double deadline;
static uint64_t per_thread; /* connections each thread makes; 0: no bound */
static int tls_version;     /* 0: h2c */
static bool resume;
static nghttp2_session_callbacks *cbs;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static ssize_t provide(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)src;
    struct call *c = ud;
    size_t n = msg_len - c->tx_off;
    if (n > length)
        n = length;
    memcpy(buf, msg + c->tx_off, n);
    c->tx_off += n;
    if (c->tx_off == msg_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)h2;
    (void)flags;
    (void)id;
    struct call *c = ud;
    if (c->rx_off + len > msg_len || memcmp(data, msg + c->rx_off, len) != 0)
        c->bad = true;
    else
        c->rx_off += len;
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)h2;
    (void)f;
    (void)flags;
    struct call *c = ud;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        c->status_ok = valuelen == 3 && memcmp(value, "200", 3) == 0;
        c->bad |= !c->status_ok;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->grpc_ok = valuelen == 1 && value[0] == '0';
        c->bad |= !c->grpc_ok;
    }
    return 0;
}

static int on_close(nghttp2_session *h2, int32_t id, uint32_t err, void *ud)
{
    (void)h2;
    (void)id;
    struct call *c = ud;
    c->closed = true;
    c->bad |= err != 0;
    return 0;
}

static bool io_write(int fd, SSL *ssl, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = ssl ? SSL_write(ssl, p, (int)n) : send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends what the session has, one write per batch (h2_io.h). */
static bool flush(nghttp2_session *h2, int fd, SSL *ssl)
{
    uint8_t batch[32768];
    for (;;) {
        const uint8_t *spill = NULL;
        size_t spill_len;
        ssize_t len = h2_gather(h2, batch, sizeof(batch), &spill, &spill_len);
        if (len < 0 || (len > 0 && !io_write(fd, ssl, batch, (size_t)len)) ||
            (spill_len > 0 && !io_write(fd, ssl, spill, spill_len)))
            return false;
        if (spill_len == 0)
            return true;
    }
}

/* One unary call on a connected (and, with ssl, handshaken) socket. */
static bool one_call(int fd, SSL *ssl)
{
    /* Pseudo-headers first (RFC 9113 8.3). */
    nghttp2_nv req[] = {
#define NV(n, v) {(uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
        NV(":method", "POST"),
        {(uint8_t *)":scheme", (uint8_t *)(ssl ? "https" : "http"), 7, ssl ? 5 : 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), NGHTTP2_NV_FLAG_NONE},
        NV(":path", "/bench.Echo/Unary"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
#undef NV
    };
    struct call c = {0};
    nghttp2_session *h2;
    if (nghttp2_session_client_new(&h2, cbs, &c) != 0)
        return false;
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_data_provider prd = {.source = {.ptr = &c}, .read_callback = provide};
    bool ok = nghttp2_submit_request(h2, NULL, req, 6, &prd, &c) > 0;
    uint8_t buf[65536];
    while (ok && !c.closed) {
        ok = flush(h2, fd, ssl);
        ssize_t n = !ok ? -1 : ssl ? SSL_read(ssl, buf, sizeof(buf)) : recv(fd, buf, sizeof(buf), 0);
        ok = n > 0 && nghttp2_session_mem_recv(h2, buf, (size_t)n) >= 0;
    }
    nghttp2_session_del(h2);
    return ok && !c.bad && c.status_ok && c.grpc_ok && c.rx_off == msg_len;
}

/* OpenSSL got a session (TLS 1.3: a ticket, after the handshake): the
 * thread's next connection offers it. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct worker *w = SSL_get_app_data(ssl);
    if (w->sess != NULL)
        SSL_SESSION_free(w->sess);
    w->sess = sess;
    return 1; /* the reference is ours */
}

/* One connection: connect, handshake, the call, close. */
static bool one_conn(struct worker *w, bool *resumed)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool ok = connect(fd, (const struct sockaddr *)&target, sizeof(target)) == 0;
    SSL *ssl = NULL;
    if (ok && w->ctx != NULL) {
        ssl = SSL_new(w->ctx);
        SSL_set_app_data(ssl, w);
        SSL_set_fd(ssl, fd);
        if (resume && w->sess != NULL)
            SSL_set_session(ssl, w->sess);
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        ok = SSL_connect(ssl) == 1;
        if (ok)
            SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
        ok = ok && alpn_len == 2 && memcmp(alpn, "h2", 2) == 0;
        *resumed = ok && SSL_session_reused(ssl);
    }
    ok = ok && one_call(fd, ssl);
    /* close_notify, as a client that closes cleanly sends it; without it
     * OpenSSL marks the session bad and never offers it again. */
    if (ok && ssl != NULL)
        SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    return ok;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    while (now() < deadline && (per_thread == 0 || w->conns + w->errors < per_thread)) {
        bool resumed = false;
        if (one_conn(w, &resumed)) {
            w->conns++;
            w->resumed += resumed;
        } else {
            w->errors++;
            ERR_clear_error();
            usleep(1000); /* a refused connect must not spin */
        }
    }
    return NULL;
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, tls_version);
    SSL_CTX_set_max_proto_version(ctx, tls_version);
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;
}

static bool parse_mode(const char *m)
{
    resume = strstr(m, "-resume") != NULL;
    if (strcmp(m, "h2c") == 0)
        tls_version = 0;
    else if (strncmp(m, "tls1.2", 6) == 0)
        tls_version = TLS1_2_VERSION;
    else if (strncmp(m, "tls1.3", 6) == 0)
        tls_version = TLS1_3_VERSION;
    else
        return false;
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 7 && argc != 8) {
        fprintf(stderr,
                "usage: %s HOST PORT THREADS SECONDS SIZE h2c|tls1.2|tls1.3|tls1.2-resume|tls1.3-resume [COUNT]\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    target = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    int nthreads = atoi(argv[3]);
    double seconds = atof(argv[4]);
    size_t size = (size_t)strtoul(argv[5], NULL, 10);
    per_thread = argc == 8 ? strtoull(argv[7], NULL, 10) : 0;
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1 || nthreads < 1 || nthreads > 1024 || seconds <= 0 ||
        size > (1u << 20) || !parse_mode(argv[6]) || (argc == 8 && per_thread == 0)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    snprintf(authority, sizeof(authority), "%s:%s", argv[1], argv[2]);
    msg_len = size + 5;
    msg = malloc(msg_len);
    struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
    if (msg == NULL || ws == NULL)
        return 1;
    msg[0] = 0;
    for (int i = 0; i < 4; i++)
        msg[1 + i] = (uint8_t)(size >> (24 - 8 * i));
    memset(msg + 5, 'x', size);
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    double t0 = now();
    deadline = t0 + seconds;
    for (int i = 0; i < nthreads; i++) {
        if (tls_version != 0 && (ws[i].ctx = client_ctx()) == NULL)
            return 1;
        if (pthread_create(&ws[i].th, NULL, run, &ws[i]) != 0)
            return 1;
    }
    uint64_t conns = 0, resumed = 0, errors = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ws[i].th, NULL);
        conns += ws[i].conns;
        resumed += ws[i].resumed;
        errors += ws[i].errors;
        if (ws[i].sess != NULL)
            SSL_SESSION_free(ws[i].sess);
        SSL_CTX_free(ws[i].ctx);
    }
    printf("conns %llu resumed %llu errors %llu seconds %.3f\n", (unsigned long long)conns, (unsigned long long)resumed,
           (unsigned long long)errors, now() - t0);
    nghttp2_session_callbacks_del(cbs);
    free(ws);
    free(msg);
    return conns > 0 ? 0 : 1;
}
