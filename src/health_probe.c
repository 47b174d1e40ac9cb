/* One grpc.health.v1 check (health_probe.h). */
#include "grelay/health_probe.h"
#include "grelay/grpc.h"
#include "grelay/tls.h"

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *const health_result_names[HC_RESULTS] = {
    "serving", "not_serving", "service_unknown", "unimplemented", "timeout", "connect_failure", "error"};

#define PROBE_OUT 4096 /* bytes of frames waiting for the socket: a check sends a few hundred */

enum probe_state { P_CONNECTING, P_HANDSHAKE, P_OPEN, P_DONE };

struct health_probe {
    struct ev_loop *loop;                /* the main thread's */
    const struct gr_cluster_cfg *cl;     /* transport and health_check settings */
    struct endpoint ep;                  /* where the check goes (a copy) */
    health_probe_done done;              /* the verdict goes there, once */
    void *ctx;                           /* done's first argument */
    int fd;                              /* the socket; -1 once closed */
    SSL *ssl;                            /* with TLS; NULL for h2c */
    nghttp2_session *h2;                 /* the client session, once connected */
    enum probe_state state;              /* where the check is */
    ev_io io;                            /* the socket, for reads and (while out or TLS wants it) writes */
    ev_timer timer;                      /* the check's timeout; 0 s to report an early verdict */
    enum health_result result;           /* the verdict, once known (P_DONE) */
    char detail[160];                    /* what to log with it */
    int http_status;                     /* :status of the answer; 0: none yet */
    int grpc_status;                     /* grpc-status from headers or trailers; -1: none yet */
    char grpc_message[96];               /* grpc-message, as sent */
    uint8_t req[300];                    /* the request body */
    size_t req_len, req_sent;            /* its length and what nghttp2 took of it */
    uint8_t body[HEALTH_PROBE_MAX_BODY]; /* the answer's DATA */
    size_t body_len;                     /* bytes in body */
    bool body_over;                      /* more DATA came than body holds */
    uint8_t out[PROBE_OUT];              /* frames nghttp2 made that the socket has not taken */
    size_t out_len, out_off;             /* bytes in out, and those written */
    const uint8_t *spill;                /* a frame that did not fit in out (nghttp2 keeps it until its next send) */
    size_t spill_len;                    /* its bytes; 0: none */
};

size_t health_probe_request(const char *service, uint8_t *out, size_t outlen)
{
    size_t n = strlen(service), msg = 0;
    uint8_t pb[300];
    if (n > 0) {
        if (n + 4 > sizeof(pb))
            return 0;
        pb[msg++] = 0x0a; /* field 1, length-delimited */
        for (size_t v = n; msg < 4; v >>= 7) {
            pb[msg++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            if (v <= 0x7f)
                break;
        }
        memcpy(pb + msg, service, n);
        msg += n;
    }
    if (msg + 5 > outlen)
        return 0;
    out[0] = 0;
    out[1] = (uint8_t)(msg >> 24);
    out[2] = (uint8_t)(msg >> 16);
    out[3] = (uint8_t)(msg >> 8);
    out[4] = (uint8_t)msg;
    memcpy(out + 5, pb, msg);
    return msg + 5;
}

static bool varint(const uint8_t *p, size_t len, size_t *at, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *at < len && shift < 64; shift += 7) {
        uint8_t b = p[(*at)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

enum health_result health_probe_parse(const uint8_t *body, size_t len)
{
    if (len < 5 || body[0] != 0)
        return HC_ERROR; /* no message, or a compressed one (never asked for) */
    size_t n = ((size_t)body[1] << 24) | ((size_t)body[2] << 16) | ((size_t)body[3] << 8) | body[4];
    if (n != len - 5)
        return HC_ERROR;
    const uint8_t *m = body + 5;
    uint64_t status = 0; /* UNKNOWN, when the field is absent */
    for (size_t at = 0; at < n;) {
        uint64_t tag, v;
        if (!varint(m, n, &at, &tag))
            return HC_ERROR;
        switch (tag & 7) {
        case 0:
            if (!varint(m, n, &at, &v))
                return HC_ERROR;
            if (tag >> 3 == 1)
                status = v;
            break;
        case 1: at += 8; break;
        case 5: at += 4; break;
        case 2:
            if (!varint(m, n, &at, &v) || v > n - at)
                return HC_ERROR;
            at += v;
            break;
        default: return HC_ERROR;
        }
        if (at > n)
            return HC_ERROR;
    }
    return status == 1 ? HC_SERVING : status == 2 ? HC_NOT_SERVING : status == 3 ? HC_SERVICE_UNKNOWN : HC_ERROR;
}

static void release(struct health_probe *p)
{
    ev_io_stop(p->loop, &p->io);
    ev_timer_stop(p->loop, &p->timer);
    if (p->h2 != NULL)
        nghttp2_session_del(p->h2);
    p->h2 = NULL;
    if (p->ssl != NULL)
        SSL_free(p->ssl);
    p->ssl = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

/* The verdict is known: done hears it from the loop (the session may be
 * inside a callback now: it is freed there too). */
static void finish(struct health_probe *p, enum health_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct health_probe *p, enum health_result r, const char *fmt, ...)
{
    if (p->state == P_DONE)
        return;
    p->state = P_DONE;
    p->result = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
    va_end(ap);
    ev_io_stop(p->loop, &p->io);
    ev_timer_stop(p->loop, &p->timer);
    ev_timer_set(&p->timer, 0.0, 0.0);
    ev_timer_start(p->loop, &p->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct health_probe *p = container_of(t, struct health_probe, timer);
    if (p->state != P_DONE) {
        p->state = P_DONE;
        p->result = HC_TIMEOUT;
        snprintf(p->detail, sizeof(p->detail), "no answer within %llums",
                 (unsigned long long)p->cl->health_check.timeout_ms);
    }
    release(p);
    health_probe_done done = p->done;
    void *ctx = p->ctx;
    enum health_result r = p->result;
    char detail[sizeof(p->detail)];
    memcpy(detail, p->detail, sizeof(detail));
    free(p);
    done(ctx, r, detail);
}

static void watch(struct health_probe *p, bool write)
{
    int ev = EV_READ | (write ? EV_WRITE : 0);
    if (ev_is_active(&p->io) && (p->io.events & (EV_READ | EV_WRITE)) == ev)
        return;
    ev_io_stop(p->loop, &p->io);
    ev_io_set(&p->io, p->fd, ev);
    ev_io_start(p->loop, &p->io);
}

/* Bytes to the socket (or TLS): >0 written, 0 would block, -1 failed. */
static ssize_t sock_write(struct health_probe *p, const uint8_t *b, size_t n)
{
    if (p->ssl == NULL) {
        ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL);
        return w >= 0 ? w : (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    ERR_clear_error();
    int w = SSL_write(p->ssl, b, (int)n);
    if (w > 0)
        return w;
    int e = SSL_get_error(p->ssl, w);
    return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
}

static ssize_t sock_read(struct health_probe *p, uint8_t *b, size_t n)
{
    if (p->ssl == NULL) {
        ssize_t r = recv(p->fd, b, n, 0);
        return r > 0 ? r : r == 0 ? -1 : (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    ERR_clear_error();
    int r = SSL_read(p->ssl, b, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(p->ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Moves what nghttp2 has to send into out (empty). A frame that does not
 * fit what is left waits in spill: nghttp2 keeps it until the next call. */
static int fill(struct health_probe *p)
{
    p->out_off = p->out_len = 0;
    if (p->spill_len > 0) {
        memcpy(p->out, p->spill, p->spill_len);
        p->out_len = p->spill_len;
        p->spill_len = 0;
    }
    while (p->out_len < sizeof(p->out) && nghttp2_session_want_write(p->h2)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->h2, &data);
        if (n < 0) {
            finish(p, HC_ERROR, "HTTP/2: %s", nghttp2_strerror((int)n));
            return GR_ERR_IO;
        }
        if (n == 0)
            break;
        if ((size_t)n > sizeof(p->out)) {
            finish(p, HC_ERROR, "HTTP/2: a frame of %zd bytes", n); /* never for a check's own frames */
            return GR_ERR_IO;
        }
        if ((size_t)n > sizeof(p->out) - p->out_len) {
            p->spill = data;
            p->spill_len = (size_t)n;
            break;
        }
        memcpy(p->out + p->out_len, data, (size_t)n);
        p->out_len += (size_t)n;
    }
    return GR_OK;
}

/* Sends what nghttp2 has; watches for writes while some is left. */
static void pump(struct health_probe *p)
{
    for (;;) {
        if (p->out_off == p->out_len) {
            if (fill(p) != GR_OK)
                return;
            if (p->out_len == 0)
                break;
        }
        ssize_t w = sock_write(p, p->out + p->out_off, p->out_len - p->out_off);
        if (w < 0) {
            finish(p, HC_CONNECT, "connection lost while sending: %s", strerror(errno));
            return;
        }
        if (w == 0)
            break;
        p->out_off += (size_t)w;
    }
    watch(p, p->out_off < p->out_len);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)f;
    (void)flags;
    struct health_probe *p = ud;
    char v[16];
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen < sizeof(v)) {
        memcpy(v, value, valuelen);
        v[valuelen] = '\0';
        p->http_status = atoi(v);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0 && valuelen < sizeof(v)) {
        memcpy(v, value, valuelen);
        v[valuelen] = '\0';
        p->grpc_status = atoi(v);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof(p->grpc_message) - 1 ? valuelen : sizeof(p->grpc_message) - 1;
        memcpy(p->grpc_message, value, n);
        p->grpc_message[n] = '\0';
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)s;
    (void)flags;
    (void)id;
    struct health_probe *p = ud;
    if (len > sizeof(p->body) - p->body_len) {
        p->body_over = true;
        return 0;
    }
    memcpy(p->body + p->body_len, data, len);
    p->body_len += len;
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    (void)id;
    struct health_probe *p = ud;
    if (p->http_status != 200)
        finish(p, HC_ERROR, "HTTP status %d (stream closed with error %u)", p->http_status, code);
    else if (p->grpc_status == GRPC_UNIMPLEMENTED)
        finish(p, HC_UNIMPLEMENTED, "UNIMPLEMENTED: %s", p->grpc_message);
    else if (p->grpc_status < 0)
        finish(p, HC_ERROR, "no grpc-status (stream closed with error %u)", code);
    else if (p->grpc_status == GRPC_DEADLINE_EXCEEDED) /* it gave up, at our grpc-timeout or before: a timeout */
        finish(p, HC_TIMEOUT, "DEADLINE_EXCEEDED from the endpoint, given grpc-timeout %llums: %s",
               (unsigned long long)p->cl->health_check.timeout_ms, p->grpc_message);
    else if (p->grpc_status != 0)
        finish(p, HC_ERROR, "grpc-status %d: %s", p->grpc_status, p->grpc_message);
    else if (p->body_over)
        finish(p, HC_ERROR, "an answer over %d bytes", HEALTH_PROBE_MAX_BODY);
    else {
        enum health_result r = health_probe_parse(p->body, p->body_len);
        finish(p, r, "%s", r == HC_ERROR ? "a malformed HealthCheckResponse" : "");
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)src;
    struct health_probe *p = ud;
    size_t n = p->req_len - p->req_sent;
    if (n > len)
        n = len;
    memcpy(buf, p->req + p->req_sent, n);
    p->req_sent += n;
    if (p->req_sent == p->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE                                 \
    }

/* The endpoint's :authority: health_check.authority, or host:port. */
static void authority(const struct health_probe *p, char *out, size_t len)
{
    const char *a = p->cl->health_check.authority;
    const char *colon = strrchr(p->ep.text, ':');
    if (a != NULL && a[0] != '\0')
        snprintf(out, len, "%s", a);
    else if (strchr(p->ep.host, ':') != NULL || colon == NULL)
        snprintf(out, len, "%s", p->ep.text); /* an IPv6 literal: the bracketed address */
    else
        snprintf(out, len, "%s%s", p->ep.host, colon);
}

static void start_session(struct health_probe *p)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        finish(p, HC_ERROR, "out of memory");
        return;
    }
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    int rc = nghttp2_session_client_new(&p->h2, cb, p);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        p->h2 = NULL;
        finish(p, HC_ERROR, "out of memory");
        return;
    }
    p->state = P_OPEN;
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, HEALTH_PROBE_MAX_BODY * 4}};
    nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, set, 2);
    char auth[300], deadline[32];
    authority(p, auth, sizeof(auth));
    snprintf(deadline, sizeof(deadline), "%llum", (unsigned long long)p->cl->health_check.timeout_ms);
    nghttp2_nv nv[] = {NV(":method", "POST"),
                       NV(":scheme", p->ssl != NULL ? "https" : "http"),
                       NV(":path", "/grpc.health.v1.Health/Check"),
                       NV(":authority", auth),
                       NV("content-type", "application/grpc"),
                       NV("te", "trailers"),
                       NV("grpc-timeout", deadline),
                       NV("user-agent", "grelay-health-check")};
    nghttp2_data_provider body = {.read_callback = read_body};
    if (nghttp2_submit_request(p->h2, NULL, nv, sizeof(nv) / sizeof(nv[0]), &body, p) < 0) {
        finish(p, HC_ERROR, "cannot submit the check");
        return;
    }
    pump(p);
}

static void handshake(struct health_probe *p)
{
    ERR_clear_error();
    int rc = SSL_connect(p->ssl);
    if (rc == 1) {
        const unsigned char *proto = NULL;
        unsigned len = 0;
        SSL_get0_alpn_selected(p->ssl, &proto, &len);
        if (len != 2 || memcmp(proto, "h2", 2) != 0) {
            finish(p, HC_CONNECT, "TLS: the endpoint did not choose ALPN h2");
            return;
        }
        start_session(p);
        return;
    }
    int e = SSL_get_error(p->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        watch(p, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    char why[200];
    finish(p, HC_CONNECT, "TLS: %s", tls_error(p->ssl, rc, why, sizeof(why)));
}

static void on_connected(struct health_probe *p)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        finish(p, HC_CONNECT, "connect: %s", strerror(err ? err : errno));
        return;
    }
    if (!p->cl->tls.set) {
        start_session(p);
        return;
    }
    p->ssl = tls_client_new(&p->cl->tls, p->ep.host, p->ep.text);
    if (p->ssl == NULL) {
        finish(p, HC_CONNECT, "TLS: cannot make a session");
        return;
    }
    SSL_set_fd(p->ssl, p->fd);
    SSL_set_connect_state(p->ssl);
    p->state = P_HANDSHAKE;
    handshake(p);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct health_probe *p = container_of(io, struct health_probe, io);
    if (p->state == P_CONNECTING) {
        if (revents & EV_WRITE)
            on_connected(p);
        return;
    }
    if (p->state == P_HANDSHAKE) {
        handshake(p);
        return;
    }
    if (p->state != P_OPEN)
        return;
    if (revents & EV_READ) {
        uint8_t buf[4096];
        for (int i = 0; i < 16 && p->state == P_OPEN; i++) { /* bounded: the answer is small */
            ssize_t n = sock_read(p, buf, sizeof(buf));
            if (n == 0)
                break;
            if (n < 0) {
                finish(p, HC_CONNECT, "connection closed before the answer");
                return;
            }
            ssize_t rc = nghttp2_session_mem_recv(p->h2, buf, (size_t)n);
            if (rc < 0) {
                finish(p, HC_ERROR, "HTTP/2: %s", nghttp2_strerror((int)rc));
                return;
            }
        }
    }
    if (p->state == P_OPEN)
        pump(p);
}

struct health_probe *health_probe_start(struct ev_loop *loop, const struct gr_cluster_cfg *cl,
                                        const struct endpoint *ep, health_probe_done done, void *ctx)
{
    struct health_probe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->cl = cl;
    p->ep = *ep;
    p->ep.address.text = p->ep.text;
    p->done = done;
    p->ctx = ctx;
    p->grpc_status = -1;
    p->state = P_CONNECTING;
    ev_init(&p->io, on_io);
    ev_timer_init(&p->timer, on_timer, (double)cl->health_check.timeout_ms / 1e3, 0.0);
    p->req_len = health_probe_request(cl->health_check.service_name, p->req, sizeof(p->req));
    p->fd = socket(ep->address.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->req_len == 0) {
        finish(p, HC_ERROR, "service_name too long");
        return p;
    }
    if (p->fd < 0) {
        finish(p, HC_CONNECT, "socket: %s", strerror(errno));
        return p;
    }
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(p->fd, (const struct sockaddr *)&ep->address.ss, ep->address.len) != 0 && errno != EINPROGRESS) {
        finish(p, HC_CONNECT, "connect: %s", strerror(errno));
        return p;
    }
    ev_timer_start(loop, &p->timer);
    ev_io_set(&p->io, p->fd, EV_WRITE);
    ev_io_start(loop, &p->io);
    return p;
}

void health_probe_cancel(struct health_probe *p)
{
    if (p == NULL)
        return;
    release(p);
    free(p);
}
