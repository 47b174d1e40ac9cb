/* A load generator for gRPC bidi streaming (nghttp2 + libev, one thread).
 *
 * Opens CONNS HTTP/2 connections with STREAMS bidi calls each, to
 * /bench.Echo/Bidi. Every call keeps INFLIGHT messages of SIZE payload
 * bytes outstanding: each echoed message that comes back (checked byte for
 * byte: the 5-byte gRPC prefix and the payload) sends one more. After
 * SECONDS it prints one line:
 *
 *   messages N bytes B seconds S errors E
 *
 * where N counts echoed messages, B their bytes (prefix included, one way)
 * and E the calls that ended or failed before the time was up. h2load
 * cannot do this: it sends one request body and waits for the response.
 *
 * INFLIGHT 0 holds the calls instead: each sends one message and, once its
 * echo is back, keeps its stream open and quiet. When all CONNS x STREAMS
 * are held it prints "held N" and holds them SECONDS longer (bench.py reads
 * the proxy's RSS and CPU meanwhile); if they are not all held within 60 s
 * it gives up, as an error.
 *
 * Usage: stream_load HOST PORT CONNS STREAMS SIZE SECONDS [INFLIGHT] */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/h2_io.h"

struct call {
    int32_t id;
    uint64_t queued; /* messages the provider may still send */
    size_t tx_off;   /* offset inside the message being sent */
    size_t rx_off;   /* offset inside the message being received */
    bool deferred;   /* provider returned NGHTTP2_ERR_DEFERRED */
};

struct client {
    int fd;
    ev_io rio, wio;
    nghttp2_session *h2;
    struct call *calls;
};

static struct ev_loop *loop;
static size_t msg_size, msg_len; /* payload bytes; payload + 5-byte prefix */
static uint8_t prefix[5];
static bool running = true;
static uint64_t messages, errors;
static int nclients;
static bool hold;           /* INFLIGHT 0: one message per call, then hold it */
static uint64_t hold_total; /* calls to hold: CONNS x STREAMS */
static double hold_seconds;
static ev_timer timer;

static void client_close(struct client *c)
{
    if (c->fd < 0)
        return;
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    close(c->fd);
    c->fd = -1;
    errors++;
}

/* Byte i of the message stream every call sends: prefix, then 'x's. */
static inline uint8_t msg_byte(size_t off) { return off < 5 ? prefix[off] : (uint8_t)'x'; }

static ssize_t provide(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)flags;
    (void)ud;
    struct call *k = src->ptr;
    size_t n = 0;
    while (n < length && k->queued > 0) {
        size_t take = msg_len - k->tx_off;
        if (take > length - n)
            take = length - n;
        for (size_t i = 0; i < take; i++)
            buf[n + i] = msg_byte(k->tx_off + i);
        n += take;
        k->tx_off += take;
        if (k->tx_off == msg_len) {
            k->tx_off = 0;
            k->queued--;
        }
    }
    if (n == 0) {
        k->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct call *k = nghttp2_session_get_stream_user_data(h2, id);
    if (k == NULL)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != msg_byte(k->rx_off)) {
            fprintf(stderr, "stream %d: echoed byte %zu of a message is wrong\n", id, k->rx_off);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        if (++k->rx_off == msg_len) {
            k->rx_off = 0;
            messages++;
            if (running && !hold)
                k->queued++;
            if (hold && messages == hold_total) {
                printf("held %llu\n", (unsigned long long)messages);
                fflush(stdout);
                ev_timer_stop(loop, &timer);
                ev_timer_set(&timer, hold_seconds, 0);
                ev_timer_start(loop, &timer);
            }
        }
    }
    if (k->deferred && k->queued > 0) {
        k->deferred = false;
        nghttp2_session_resume_data(h2, id);
    }
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)h2;
    (void)flags;
    (void)ud;
    bool status = namelen == 7 && memcmp(name, ":status", 7) == 0;
    bool grpc_status = namelen == 11 && memcmp(name, "grpc-status", 11) == 0;
    if ((status && !(valuelen == 3 && memcmp(value, "200", 3) == 0)) ||
        (grpc_status && !(valuelen == 1 && value[0] == '0'))) {
        fprintf(stderr, "stream %d: %.*s %.*s\n", f->hd.stream_id, (int)namelen, name, (int)valuelen, value);
        errors++;
    }
    return 0;
}

static int on_close(nghttp2_session *h2, int32_t id, uint32_t err, void *ud)
{
    (void)h2;
    (void)id;
    (void)ud;
    if (running) {
        fprintf(stderr, "stream %d closed early (error code %u)\n", id, err);
        errors++;
    }
    return 0;
}

/* Sends all of p, waiting for the socket if it is full: a load generator
 * may block briefly (mem_send's chunk is only valid until its next call). */
static bool send_all(struct client *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, p + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            fd_set ws;
            FD_ZERO(&ws);
            FD_SET(c->fd, &ws);
            select(c->fd + 1, NULL, &ws, NULL, NULL);
            continue;
        }
        return false;
    }
    return true;
}

/* One send() per wake-up (h2_io.h), not one per frame. */
static void flush(struct client *c)
{
    static uint8_t batch[65536];
    for (;;) {
        const uint8_t *spill = NULL;
        size_t spill_len;
        ssize_t len = h2_gather(c->h2, batch, sizeof(batch), &spill, &spill_len);
        if (len < 0 || !send_all(c, batch, (size_t)len) || !send_all(c, spill, spill_len)) {
            client_close(c);
            return;
        }
        if (spill_len == 0)
            return;
    }
}

static void on_readable(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    struct client *c = w->data;
    int rc = h2_feed(c->h2, c->fd);
    if (rc < 0)
        client_close(c);
    else if (rc > 0)
        flush(c);
}

static void on_timeout(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    if (hold && messages < hold_total) {
        fprintf(stderr, "only %llu of %llu calls held\n", (unsigned long long)messages, (unsigned long long)hold_total);
        errors++;
    }
    running = false;
    ev_break(l, EVBREAK_ALL);
}

static int client_open(struct client *c, const struct sockaddr_in *to, const char *authority, int streams,
                       uint64_t inflight, nghttp2_session_callbacks *cbs)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) != 0) {
        perror("connect");
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (nghttp2_session_client_new(&c->h2, cbs, c) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    const nghttp2_nv req[] = {
#define NV(n, v) {(uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
        NV(":method", "POST"),
        NV(":scheme", "http"),
        {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), NGHTTP2_NV_FLAG_NONE},
        NV(":path", "/bench.Echo/Bidi"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
#undef NV
    };
    c->calls = calloc((size_t)streams, sizeof(*c->calls));
    if (c->calls == NULL)
        return -1;
    for (int i = 0; i < streams; i++) {
        struct call *k = &c->calls[i];
        k->queued = inflight;
        nghttp2_data_provider prd = {.source = {.ptr = k}, .read_callback = provide};
        k->id = nghttp2_submit_request(c->h2, NULL, req, sizeof(req) / sizeof(req[0]), &prd, k);
        if (k->id < 0)
            return -1;
    }
    ev_io_init(&c->rio, on_readable, c->fd, EV_READ);
    c->rio.data = c;
    ev_io_start(loop, &c->rio);
    flush(c);
    return fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 7 || argc > 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNS STREAMS SIZE SECONDS [INFLIGHT]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address: %s\n", argv[1]);
        return 2;
    }
    nclients = atoi(argv[3]);
    int streams = atoi(argv[4]);
    msg_size = (size_t)strtoul(argv[5], NULL, 10);
    double seconds = atof(argv[6]);
    uint64_t inflight = argc == 8 ? strtoull(argv[7], NULL, 10) : 1;
    hold = inflight == 0;
    if (hold) {
        inflight = 1;
        hold_total = (uint64_t)nclients * (uint64_t)streams;
        hold_seconds = seconds;
        seconds = 60; /* the most the calls may take to be all held */
    }
    if (nclients < 1 || streams < 1 || msg_size > (16u << 20) || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    msg_len = msg_size + 5;
    prefix[1] = (uint8_t)(msg_size >> 24);
    prefix[2] = (uint8_t)(msg_size >> 16);
    prefix[3] = (uint8_t)(msg_size >> 8);
    prefix[4] = (uint8_t)msg_size;

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    loop = ev_default_loop(0);
    struct client *clients = calloc((size_t)nclients, sizeof(*clients));
    if (clients == NULL)
        return 1;
    char authority[64]; /* HOST:PORT, as h2load sends it (Caddy routes on it) */
    snprintf(authority, sizeof(authority), "%s:%s", argv[1], argv[2]);
    for (int i = 0; i < nclients; i++)
        if (client_open(&clients[i], &to, authority, streams, inflight, cbs) != 0)
            return 1;
    ev_timer_init(&timer, on_timeout, seconds, 0);
    ev_timer_start(loop, &timer);
    ev_now_update(loop);
    double t0 = ev_now(loop);
    ev_run(loop, 0);
    ev_now_update(loop);
    printf("messages %llu bytes %llu seconds %.3f errors %llu\n", (unsigned long long)messages,
           (unsigned long long)(messages * msg_len), ev_now(loop) - t0, (unsigned long long)errors);
    for (int i = 0; i < nclients; i++) {
        if (clients[i].fd >= 0)
            close(clients[i].fd);
        nghttp2_session_del(clients[i].h2);
        free(clients[i].calls);
    }
    free(clients);
    nghttp2_session_callbacks_del(cbs);
    return errors == 0 && messages > 0 ? 0 : 1;
}
