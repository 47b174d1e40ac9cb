/* A fast gRPC echo server for benchmarks (nghttp2 + libev, one thread).
 *
 * Every call, unary or streaming, gets response HEADERS (200,
 * application/grpc) when its first DATA arrives, each DATA chunk echoed back
 * as it arrives (gRPC frames in = the same frames out, so unary and bidi echo
 * both work), and trailers with grpc-status 0 at the request's END_STREAM.
 * A real gRPC client checks it (tests/integration/test_bench_backend.py).
 *
 * Usage: echo_backend HOST PORT */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/h2_io.h"

struct call {
    uint8_t *data; /* echo bytes not yet sent */
    size_t len, cap;
    size_t off;
    bool ended;   /* request END_STREAM seen */
    bool started; /* response headers submitted */
    bool deferred;
};

struct session {
    int fd;
    ev_io rio, wio;
    nghttp2_session *h2;
    uint8_t *out; /* bytes nghttp2 gave us that the socket did not take */
    size_t out_len;
};

static struct ev_loop *loop;
static nghttp2_session_callbacks *cbs;

static const nghttp2_nv resp_headers[] = {
    {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE},
    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE},
};
static const nghttp2_nv trailers[] = {
    {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE},
};

static void session_close(struct session *s)
{
    ev_io_stop(loop, &s->rio);
    ev_io_stop(loop, &s->wio);
    close(s->fd);
    nghttp2_session_del(s->h2);
    free(s->out);
    free(s);
}

static ssize_t read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)ud;
    struct call *c = src->ptr;
    size_t n = c->len - c->off;
    if (n > length)
        n = length;
    memcpy(buf, c->data + c->off, n);
    c->off += n;
    if (c->off == c->len)
        c->off = c->len = 0;
    if (c->len == 0 && c->ended) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_submit_trailer(h2, id, trailers, 1);
    } else if (n == 0) {
        c->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void start_or_resume(nghttp2_session *h2, int32_t id, struct call *c)
{
    if (!c->started) {
        c->started = true;
        nghttp2_data_provider prd = {.source = {.ptr = c}, .read_callback = read_cb};
        nghttp2_submit_response(h2, id, resp_headers, 2, &prd);
    } else if (c->deferred) {
        c->deferred = false;
        nghttp2_session_resume_data(h2, id);
    }
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, calloc(1, sizeof(struct call)));
    return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(h2, id);
    if (c == NULL)
        return 0;
    if (c->len + len > c->cap) {
        size_t ncap = (c->len + len) * 2;
        uint8_t *nd = realloc(c->data, ncap);
        if (nd == NULL)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->data = nd;
        c->cap = ncap;
    }
    memcpy(c->data + c->len, data, len);
    c->len += len;
    start_or_resume(h2, id, c);
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
        if (c != NULL) {
            c->ended = true;
            start_or_resume(h2, f->hd.stream_id, c);
        }
    }
    return 0;
}

static int on_close(nghttp2_session *h2, int32_t id, uint32_t err, void *ud)
{
    (void)err;
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(h2, id);
    if (c != NULL) {
        free(c->data);
        free(c);
    }
    return 0;
}

/* Sends what nghttp2 has queued, one send() per wake-up (h2_io.h);
 * what the socket does not take waits in s->out for EPOLLOUT. */
static void flush(struct session *s)
{
    static uint8_t batch[65536];
    for (;;) {
        if (s->out_len == 0) {
            const uint8_t *spill = NULL;
            size_t spill_len;
            ssize_t len = h2_gather(s->h2, batch, sizeof(batch), &spill, &spill_len);
            if (len < 0) {
                session_close(s);
                return;
            }
            if (len == 0 && spill_len == 0)
                break;
            ssize_t w = len > 0 ? send(s->fd, batch, (size_t)len, MSG_NOSIGNAL) : 0;
            if (w == len && spill_len == 0)
                continue;
            if (w < 0 && errno != EAGAIN) {
                session_close(s);
                return;
            }
            if (w < 0)
                w = 0;
            s->out_len = (size_t)(len - w) + spill_len;
            s->out = malloc(s->out_len);
            memcpy(s->out, batch + w, (size_t)(len - w));
            memcpy(s->out + (len - w), spill, spill_len);
        }
        ssize_t w = send(s->fd, s->out, s->out_len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            session_close(s);
            return;
        }
        if (w < 0 || (size_t)w < s->out_len) {
            if (w > 0) {
                memmove(s->out, s->out + w, s->out_len - (size_t)w);
                s->out_len -= (size_t)w;
            }
            ev_io_start(loop, &s->wio);
            return;
        }
        free(s->out);
        s->out = NULL;
        s->out_len = 0;
    }
    ev_io_stop(loop, &s->wio);
    if (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2))
        session_close(s);
}

static void on_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct session *s = w->data;
    int rc = h2_feed(s->h2, s->fd);
    if (rc < 0)
        session_close(s);
    else if (rc > 0)
        flush(s);
}

static void on_writable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    flush(w->data);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct session *s = calloc(1, sizeof(*s));
        s->fd = fd;
        nghttp2_session_server_new(&s->h2, cbs, s);
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10000},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
        nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, 2);
        nghttp2_session_set_local_window_size(s->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
        ev_io_init(&s->rio, on_readable, fd, EV_READ);
        ev_io_init(&s->wio, on_writable, fd, EV_WRITE);
        s->rio.data = s->wio.data = s;
        ev_io_start(loop, &s->rio);
        flush(s);
    }
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0) {
        perror("listen");
        return 1;
    }
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    loop = ev_default_loop(0);
    ev_io lw;
    ev_io_init(&lw, on_accept, lfd, EV_READ);
    ev_io_start(loop, &lw);
    ev_signal sint, sterm;
    ev_signal_init(&sint, on_signal, SIGINT);
    ev_signal_init(&sterm, on_signal, SIGTERM);
    ev_signal_start(loop, &sint);
    ev_signal_start(loop, &sterm);
    printf("ready\n");
    fflush(stdout);
    ev_run(loop, 0);
    nghttp2_session_callbacks_del(cbs);
    close(lfd);
    return 0;
}
