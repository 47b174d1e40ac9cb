/* The fuzz driver (see driver.h for what it does and the input layout).
 * Nothing here calls grelay's internals: driver_grelay.c does. The fake
 * backend uses nghttp2's default allocator (inside libnghttp2.so, so not
 * wrapped) and static storage: failmalloc only hits grelay. */
#include "driver.h"

#include <arpa/inet.h>
#include <ev.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <sanitizer/common_interface_defs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN (sizeof(PREFACE) - 1)
#define HEADER_LEN 5    /* input bytes before the client's */
#define MAX_PIECES 16   /* the client's bytes go in at most this many writes */
#define SETTLE_TURNS 32 /* loop turns per settle() at most */
#define DRAIN_TURNS 256 /* turns allowed for reaping everything at the end */
#define MAX_UP 8        /* fake backend connections at once */
#define MAX_FS 64       /* fake backend streams at once */
#define ECHO_MAX 256    /* request bytes a fake stream keeps to echo */
#define ECHO_NORMAL 64  /* what a normal answer echoes */
#define BIG_BODY 5000   /* K_BIG's response body: more than a 2 KiB window */

/* ------------------------------------------------------------------------
 * failmalloc: the targets link with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc, so grelay's calls (and nghttp2's through src/mem.c) land
 * here. grelay calls no strdup/strndup/posix_memalign. Failures happen only
 * while fm.armed (grelay code running), never in the driver or libFuzzer. */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static struct {
    bool armed;       /* grelay code is running */
    bool sticky;      /* fail from fail_at on, not only at fail_at */
    uint32_t fail_at; /* 1-based allocation number, 0 = never */
    uint32_t count;   /* allocations seen this input */
    uint32_t failed;  /* allocations failed this input */
    bool print_stack; /* GRELAY_FUZZ_FM_STACK: print where the first failure of an input hits */
} fm;

/* outer: where the allocating function returns to (its caller), or NULL.
 * (The gRPC-Web trailer bug this fuzzer found first, a NULL frame after a
 * failed allocation, is fixed: tests/fuzz/crashes-found/README.md; its
 * inputs stay in the corpora.) */
static bool fm_fail(void *outer)
{
    if (!fm.armed)
        return false;
    uint32_t k = ++fm.count;
    if (fm.fail_at != 0 && (k == fm.fail_at || (fm.sticky && k > fm.fail_at))) {
        fm.failed++;
        if (fm.print_stack && fm.failed == 1)
            __sanitizer_print_stack_trace(); /* where the first failure hits */
        return true;
    }
    return false;
}

/* While armed, every caller is grelay code built with frame pointers, so
 * __builtin_return_address(1) (the caller's return address) is safe. */
#define OUTER() (fm.armed ? __builtin_return_address(1) : NULL)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wframe-address"
void *__wrap_malloc(size_t n) { return fm_fail(OUTER()) ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fm_fail(OUTER()) ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return fm_fail(OUTER()) ? NULL : __real_realloc(p, n); }
#pragma clang diagnostic pop

/* ------------------------------------------------------------------------
 * Totals for GRELAY_FUZZ_STATS. */

static struct {
    uint64_t inputs;
    uint64_t up_conns;     /* upstream connections grelay opened */
    uint64_t up_requests;  /* request HEADERS the backend saw */
    uint64_t up_answered;  /* responses the backend completed (END_STREAM sent) */
    uint64_t up_resets;    /* RST_STREAM the backend sent */
    uint64_t client_bytes; /* bytes grelay wrote to clients */
    uint64_t alloc_failed; /* allocations made to fail */
    uint64_t fm_inputs;    /* inputs in which at least one allocation failed */
} tot;

static int stats_level;
static const char *target_name = "fuzz";

static void print_stats(void)
{
    fprintf(stderr,
            "%s: %llu inputs; upstream: %llu connections, %llu requests, %llu answered, %llu resets; "
            "%llu bytes to clients; %llu allocations failed in %llu inputs\n",
            target_name, (unsigned long long)tot.inputs, (unsigned long long)tot.up_conns,
            (unsigned long long)tot.up_requests, (unsigned long long)tot.up_answered, (unsigned long long)tot.up_resets,
            (unsigned long long)tot.client_bytes, (unsigned long long)tot.alloc_failed,
            (unsigned long long)tot.fm_inputs);
}

/* ------------------------------------------------------------------------
 * The fake backend: accepts grelay's upstream connections and answers each
 * request as the input's byte 3 says. */

enum up_kind {
    K_NORMAL = 0,    /* 0-3: at the request's end: headers, one DATA echoing it, grpc-status 0 */
    K_BIG = 4,       /* the same with a body of BIG_BODY bytes (flow control both ways) */
    K_STATUS = 5,    /* the same with grpc-status 3 and a message */
    K_BIDI = 6,      /* 6-7: headers at once, echo each DATA as it comes, trailers at the end */
    K_REFUSE = 8,    /* RST_STREAM REFUSED_STREAM (a transparent retry) */
    K_RESET = 9,     /* RST_STREAM INTERNAL_ERROR */
    K_UNAVAIL = 10,  /* trailers-only grpc-status 14 (retry_on: unavailable) */
    K_HTTP503 = 11,  /* not gRPC: :status 503, text/html body */
    K_CLOSE = 12,    /* closes the TCP connection (FIN) */
    K_GOAWAY = 13,   /* GOAWAY below this stream: grelay sees it refused */
    K_HANG = 14,     /* never answers */
    K_RST_DATA = 15, /* headers and DATA, then RST_STREAM instead of trailers */
};

struct fake_conn {
    int fd; /* -1: slot free */
    nghttp2_session *h2;
    bool close_now; /* close after this service pass */
};

struct fake_stream {
    bool used;
    struct fake_conn *fc;
    int32_t id;
    uint8_t kind;
    bool req_ended;        /* the request's END_STREAM arrived */
    bool responded;        /* response submitted */
    uint8_t buf[ECHO_MAX]; /* the request body's first bytes (K_BIDI: all, up to ECHO_MAX) */
    size_t have, sent;
};

static struct {
    int listen_fd; /* the cluster's endpoint */
    struct fake_conn conns[MAX_UP];
    struct fake_stream streams[MAX_FS];
    nghttp2_session_callbacks *cbs;
    uint8_t kinds;     /* input byte 3 */
    bool small_limit;  /* advertise MAX_CONCURRENT_STREAMS 1 */
    bool refuse;       /* reset every new connection (end of input) */
    bool io;           /* bytes moved this turn */
    uint32_t requests; /* request HEADERS seen this input */
    uint32_t answered;
} up;

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                             \
    }

static ssize_t up_send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags, void *user_data)
{
    (void)session;
    (void)flags;
    struct fake_conn *fc = user_data;
    ssize_t n = send(fc->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
    up.io = true;
    return n;
}

static bool is_bidi(uint8_t kind) { return kind == K_BIDI || kind == K_BIDI + 1; }

/* The response body: BIG_BODY bytes (K_BIG), what came so far (K_BIDI), the
 * page (K_HTTP503) or the request body's first ECHO_NORMAL bytes; then the
 * trailers (or the reset) from here, as nghttp2 allows. */
static ssize_t fs_read(nghttp2_session *session, int32_t id, uint8_t *out, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *user_data)
{
    (void)user_data;
    struct fake_stream *fs = src->ptr;
    size_t total = fs->kind == K_BIG                            ? BIG_BODY
                   : is_bidi(fs->kind) || fs->kind == K_HTTP503 ? fs->have
                   : fs->have < ECHO_NORMAL                     ? fs->have
                                                                : ECHO_NORMAL;
    size_t n = total - fs->sent < length ? total - fs->sent : length;
    for (size_t i = 0; i < n; i++) {
        size_t at = fs->sent + i;
        out[i] = fs->kind != K_BIG ? fs->buf[at] : fs->have ? fs->buf[at % fs->have] : (uint8_t)at;
    }
    fs->sent += n;
    if (fs->sent < total)
        return (ssize_t)n;
    if (is_bidi(fs->kind) && !fs->req_ended)
        return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (fs->kind == K_HTTP503)
        return (ssize_t)n; /* END_STREAM on the DATA, no trailers */
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (fs->kind == K_RST_DATA) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    } else if (fs->kind == K_STATUS) {
        nghttp2_nv tr[] = {NV("grpc-status", "3"), NV("grpc-message", "bad%20argument")};
        nghttp2_submit_trailer(session, id, tr, 2);
    } else {
        nghttp2_nv tr[] = {NV("grpc-status", "0")};
        nghttp2_submit_trailer(session, id, tr, 1);
    }
    return (ssize_t)n;
}

/* Headers, then the body from fs_read (and trailers from there). */
static void respond(nghttp2_session *session, struct fake_stream *fs)
{
    nghttp2_nv h[] = {NV(":status", "200"), NV("content-type", "application/grpc"), NV("x-backend", "fake")};
    nghttp2_data_provider prd = {.source = {.ptr = fs}, .read_callback = fs_read};
    fs->responded = true;
    nghttp2_submit_response(session, fs->id, h, 3, &prd);
}

/* The request's HEADERS are complete: act on the kind. */
static void on_request(nghttp2_session *session, struct fake_conn *fc, struct fake_stream *fs)
{
    switch (fs->kind) {
    case K_REFUSE:
    case K_RESET:
        fs->responded = true;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, fs->id,
                                  fs->kind == K_REFUSE ? NGHTTP2_REFUSED_STREAM : NGHTTP2_INTERNAL_ERROR);
        break;
    case K_UNAVAIL: {
        nghttp2_nv h[] = {NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", "14"),
                          NV("grpc-message", "try%20again")};
        fs->responded = true;
        nghttp2_submit_response(session, fs->id, h, 4, NULL);
        break;
    }
    case K_HTTP503: {
        static const char page[] = "<html>down</html>";
        nghttp2_nv h[] = {NV(":status", "503"), NV("content-type", "text/html")};
        nghttp2_data_provider prd = {.source = {.ptr = fs}, .read_callback = fs_read};
        memcpy(fs->buf, page, sizeof(page) - 1); /* the body; up_on_data keeps off it */
        fs->have = sizeof(page) - 1;
        fs->responded = true;
        nghttp2_submit_response(session, fs->id, h, 2, &prd);
        break;
    }
    case K_CLOSE: fc->close_now = true; break;
    case K_GOAWAY:
        fs->responded = true;
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, fs->id - 2 > 0 ? fs->id - 2 : 0, NGHTTP2_NO_ERROR, NULL, 0);
        break;
    case K_BIDI:
    case K_BIDI + 1: respond(session, fs); break;
    default: break;
    }
}

static struct fake_stream *fs_of(nghttp2_session *session, int32_t id)
{
    return nghttp2_session_get_stream_user_data(session, id);
}

static int up_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    uint32_t k = up.requests++;
    tot.up_requests++;
    struct fake_stream *fs = NULL;
    for (size_t i = 0; i < MAX_FS && fs == NULL; i++)
        if (!up.streams[i].used)
            fs = &up.streams[i];
    if (fs == NULL) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    memset(fs, 0, sizeof(*fs));
    fs->used = true;
    fs->fc = user_data;
    fs->id = frame->hd.stream_id;
    fs->kind = (uint8_t)(k % 2 == 0 ? up.kinds & 15 : up.kinds >> 4);
    nghttp2_session_set_stream_user_data(session, fs->id, fs);
    return 0;
}

static int up_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct fake_stream *fs = fs_of(session, frame->hd.stream_id);
    if (fs == NULL || (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        on_request(session, user_data, fs);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        fs->req_ended = true;
        if (!fs->responded && (fs->kind <= K_STATUS || fs->kind == K_RST_DATA))
            respond(session, fs);
        else if (fs->responded && is_bidi(fs->kind))
            nghttp2_session_resume_data(session, fs->id);
    }
    return 0;
}

static int up_on_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                      void *user_data)
{
    (void)flags;
    (void)user_data;
    struct fake_stream *fs = fs_of(session, id);
    if (fs == NULL || fs->kind == K_HANG || fs->kind == K_HTTP503)
        return 0;
    size_t take = ECHO_MAX - fs->have < len ? ECHO_MAX - fs->have : len;
    memcpy(fs->buf + fs->have, data, take);
    fs->have += take;
    if (take > 0 && fs->responded && is_bidi(fs->kind))
        nghttp2_session_resume_data(session, id);
    return 0;
}

static int up_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    (void)user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        tot.up_resets++;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        up.answered++;
        tot.up_answered++;
    }
    return 0;
}

static int up_on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user_data)
{
    (void)error_code;
    (void)user_data;
    struct fake_stream *fs = fs_of(session, id);
    if (fs != NULL) {
        nghttp2_session_set_stream_user_data(session, id, NULL);
        fs->used = false;
    }
    return 0;
}

/* Closes with RST, not FIN: no TIME_WAIT, so thousands of inputs a second
 * do not run the loopback out of ports. */
static void rst_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void fc_close(struct fake_conn *fc, bool rst)
{
    if (rst)
        rst_close(fc->fd);
    else
        close(fc->fd);
    fc->fd = -1;
    nghttp2_session_del(fc->h2); /* calls no callback: free its streams here */
    fc->h2 = NULL;
    for (size_t i = 0; i < MAX_FS; i++)
        if (up.streams[i].used && up.streams[i].fc == fc)
            up.streams[i].used = false;
}

static void fc_open(int fd)
{
    struct fake_conn *fc = NULL;
    for (size_t i = 0; i < MAX_UP && fc == NULL; i++)
        if (up.conns[i].fd < 0)
            fc = &up.conns[i];
    if (fc == NULL || up.refuse || nghttp2_session_server_new(&fc->h2, up.cbs, fc) != 0) {
        rst_close(fd);
        return;
    }
    /* Without it, Nagle holds our second small write until grelay's delayed
     * ACK (40 ms): answers would stall for the whole input. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fc->fd = fd;
    fc->close_now = false;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, up.small_limit ? 1 : 100}};
    nghttp2_submit_settings(fc->h2, NGHTTP2_FLAG_NONE, iv, 1);
}

/* Accepts, reads, answers. Returns whether any byte moved. */
static bool up_service(void)
{
    static uint8_t rbuf[16384];
    up.io = false;
    for (;;) {
        int fd = accept4(up.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        up.io = true;
        tot.up_conns++;
        fc_open(fd);
    }
    for (size_t i = 0; i < MAX_UP; i++) {
        struct fake_conn *fc = &up.conns[i];
        if (fc->fd < 0)
            continue;
        bool eof = false;
        for (;;) {
            ssize_t n = recv(fc->fd, rbuf, sizeof(rbuf), 0);
            if (n > 0) {
                up.io = true;
                if (nghttp2_session_mem_recv(fc->h2, rbuf, (size_t)n) < 0) {
                    fc->close_now = true;
                    break;
                }
                if (fc->close_now)
                    break;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            eof = true; /* grelay closed it (or reset it) */
            break;
        }
        if (!fc->close_now && !eof && nghttp2_session_send(fc->h2) != 0)
            fc->close_now = true;
        if (eof || fc->close_now || (!nghttp2_session_want_read(fc->h2) && !nghttp2_session_want_write(fc->h2))) {
            up.io = true;
            fc_close(fc, eof);
        }
    }
    return up.io;
}

static void up_close_all(void)
{
    for (size_t i = 0; i < MAX_UP; i++)
        if (up.conns[i].fd >= 0)
            fc_close(&up.conns[i], true);
}

/* ------------------------------------------------------------------------
 * The client and the loop. */

static int cfd = -1; /* the client's end of the socketpair */
static size_t client_got;

static bool client_drain(void)
{
    static uint8_t sink[65536];
    bool got = false;
    while (cfd >= 0) {
        ssize_t n = recv(cfd, sink, sizeof(sink), MSG_DONTWAIT);
        if (n <= 0)
            break;
        client_got += (size_t)n;
        got = true;
    }
    return got;
}

/* One turn: one loop iteration of grelay, then the backend and the client.
 * Returns whether anything happened or is due. */
static bool turn(void)
{
    fm.armed = true;
    ev_run(gp_loop(), EVRUN_NOWAIT);
    fm.armed = false;
    bool progress = up_service();
    progress |= client_drain();
    struct gp_census c;
    gp_census(&c);
    return progress || c.dirty > 0 || c.reap > 0;
}

/* Turns until two in a row are quiet, or SETTLE_TURNS. */
static void settle(void)
{
    int quiet = 0;
    for (int i = 0; i < SETTLE_TURNS && quiet < 2; i++)
        quiet = turn() ? 0 : quiet + 1;
}

/* The client's bytes: the preface (HTTP/2), then the input. */
struct client_bytes {
    const uint8_t *pre;
    size_t pre_len;
    const uint8_t *body;
    size_t body_len;
};

/* Writes bytes [off, off + n) of the client's stream; returns false once
 * grelay has closed its end. */
static bool client_write(const struct client_bytes *cb, size_t off, size_t n)
{
    while (n > 0) {
        struct iovec iov[2];
        int cnt = 0;
        if (off < cb->pre_len) {
            size_t k = cb->pre_len - off < n ? cb->pre_len - off : n;
            iov[cnt++] = (struct iovec){(void *)(cb->pre + off), k};
            if (n > k)
                iov[cnt++] = (struct iovec){(void *)cb->body, n - k};
        } else {
            iov[cnt++] = (struct iovec){(void *)(cb->body + off - cb->pre_len), n};
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t w = sendmsg(cfd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!turn() && !turn())
                return true; /* grelay does not read (paused): give up on the rest */
            continue;
        }
        if (w < 0)
            return false;
        off += (size_t)w;
        n -= (size_t)w;
    }
    return true;
}

/* The size of piece k (left bytes remain), from input byte 2. */
static size_t piece_len(uint8_t split, unsigned k, size_t left)
{
    if (split == 0 || k + 1 >= MAX_PIECES)
        return left;
    size_t base = (size_t)(split & 0x3f) + 1, n;
    switch (split >> 6) {
    case 0: n = base; break;                    /* even pieces */
    case 1: n = k % 2 ? base * 8 : base; break; /* short, long, short... */
    case 2: n = base << (k < 6 ? k : 6); break; /* growing */
    default: n = k == 0 ? base : left; break;   /* one cut */
    }
    return n < left ? n : left;
}

static void report_and_abort(const char *what, const struct gp_census *c)
{
    fprintf(stderr,
            "fuzz driver: %s: streams %zu, downstream conns %zu, sniffing %zu, upstream conns %zu, waiting %zu, "
            "dirty %zu, reap %zu, chunks out %zu (failmalloc at %u%s: %u allocations failed)\n",
            what, c->streams, c->downstream_conns, c->sniffing, c->upstream_conns, c->waiting, c->dirty, c->reap,
            c->chunks_out, fm.fail_at, fm.sticky ? " and after" : " only", fm.failed);
    abort();
}

static bool census_clean(const struct gp_census *c)
{
    return c->streams == 0 && c->downstream_conns == 0 && c->sniffing == 0 && c->upstream_conns == 0 &&
           c->waiting == 0 && c->dirty == 0 && c->reap == 0 && c->chunks_out == 0;
}

static const char *config_template = "workers: 1\n"
                                     "log_level: error\n"
                                     "listeners:\n"
                                     "  - name: fuzz\n"
                                     "    address: 127.0.0.1:%u\n"
                                     "    grpc_web: true\n"
                                     "    grpc_web_max_request: 2KiB\n"
                                     "    max_concurrent_streams: 8\n"
                                     "    stream_buffer: 2KiB\n"
                                     "    connection_window: 64KiB\n"
                                     "    max_request_headers: 2KiB\n"
                                     "    hibernate_after: 0s\n"
                                     "    virtual_hosts:\n"
                                     "      - name: default\n"
                                     "        domains: [\"*\"]\n"
                                     "        cors:\n"
                                     "          allow_origins: [\"http://localhost:3000\"]\n"
                                     "          allow_headers: [x-user-id]\n"
                                     "          expose_headers: [x-backend]\n"
                                     "          max_age: 600\n"
                                     "        routes:\n"
                                     "          - match: { service: demo.Greeter }\n"
                                     "            cluster: fake\n"
                                     "            timeout: 10s\n"
                                     "            max_grpc_timeout: 30s\n"
                                     "            grpc_timeout_offset: 1ms\n"
                                     "            retry_policy:\n"
                                     "              retry_on: [unavailable]\n"
                                     "              num_retries: 2\n"
                                     "              backoff: { base_interval: 1ms, max_interval: 1ms }\n"
                                     "          - match: { prefix: \"/\" }\n"
                                     "            cluster: fake\n"
                                     "clusters:\n"
                                     "  - name: fake\n"
                                     "    connect_timeout: 2s\n"
                                     "    max_connections: 2\n"
                                     "    max_pending: 4\n"
                                     "    max_streams_per_connection: 4\n"
                                     "    stream_buffer: 2KiB\n"
                                     "    connection_window: 64KiB\n"
                                     "    endpoints:\n"
                                     "      - address: 127.0.0.1:%u\n";

/* A loopback socket on an ephemeral port; listening or (for the proxy's
 * listener, which worker_new binds again with SO_REUSEPORT) only bound. */
static int loopback_socket(bool do_listen, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || (do_listen && listen(fd, 64) != 0) ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("fuzz driver: loopback socket");
        abort();
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void init_once(enum fuzz_front front)
{
    static bool done;
    if (done)
        return;
    done = true;
    signal(SIGPIPE, SIG_IGN);
    target_name = front == FUZZ_FRONT_H1 ? "fuzz_h1" : "fuzz_h2_session";
    const char *st = getenv("GRELAY_FUZZ_STATS");
    stats_level = st ? atoi(st) : 0;
    if (stats_level > 0)
        atexit(print_stats);
    fm.print_stack = getenv("GRELAY_FUZZ_FM_STACK") != NULL;
    for (size_t i = 0; i < MAX_UP; i++)
        up.conns[i].fd = -1;
    unsigned listener_port, up_port;
    int reserve = loopback_socket(false, &listener_port);
    up.listen_fd = loopback_socket(true, &up_port);
    static char yaml[4096];
    snprintf(yaml, sizeof(yaml), config_template, listener_port, up_port);
    char err[512];
    const char *dbg = getenv("GRELAY_FUZZ_DEBUG");
    if (gp_start(yaml, dbg != NULL && *dbg != '0', err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz driver: %s\n", err);
        abort();
    }
    close(reserve); /* the worker holds the port now */
    if (nghttp2_session_callbacks_new(&up.cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_send_callback(up.cbs, up_send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(up.cbs, up_on_begin_headers);
    nghttp2_session_callbacks_set_on_frame_recv_callback(up.cbs, up_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(up.cbs, up_on_data);
    nghttp2_session_callbacks_set_on_frame_send_callback(up.cbs, up_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(up.cbs, up_on_stream_close);
}

int fuzz_drive(enum fuzz_front front, const uint8_t *data, size_t size)
{
    init_once(front);
    uint8_t hdr[HEADER_LEN] = {0};
    memcpy(hdr, data, size < HEADER_LEN ? size : HEADER_LEN);
    struct client_bytes cb = {
        .pre = (const uint8_t *)PREFACE,
        .pre_len = front == FUZZ_FRONT_H2 ? PREFACE_LEN : 0,
        .body = size > HEADER_LEN ? data + HEADER_LEN : data,
        .body_len = size > HEADER_LEN ? size - HEADER_LEN : 0,
    };
    uint16_t fmv = (uint16_t)(hdr[0] | hdr[1] << 8);
    fm.fail_at = fmv & 0x7fff;
    fm.sticky = (fmv & 0x8000) != 0;
    fm.count = fm.failed = 0;
    up.kinds = hdr[3];
    up.small_limit = (hdr[4] & 4) != 0;
    up.refuse = false;
    up.requests = up.answered = 0;
    client_got = 0;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("fuzz driver: socketpair");
        abort();
    }
    cfd = sv[0];
    fm.armed = true;
    gp_accept(front, sv[1]); /* takes sv[1], closes it on failure */
    fm.armed = false;
    settle();

    /* The client's bytes, in pieces, the loop running in between. */
    size_t total = cb.pre_len + cb.body_len, off = 0;
    for (unsigned k = 0; off < total; k++) {
        size_t n = piece_len(hdr[2], k, total - off);
        if (!client_write(&cb, off, n))
            break;
        off += n;
        settle();
    }
    settle();
    if (hdr[4] & 2) {
        up_close_all(); /* the backend goes away first: calls fail or retry */
        settle();
    }
    if (hdr[4] & 1) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        settle();
    }

    /* The client leaves; then the backend; then everything must be reaped. */
    if (stats_level >= 3) {
        struct gp_census c0;
        gp_census(&c0);
        fprintf(stderr, "%s: before the client leaves: %zu calls, %zu waiting, %zu upstream conns\n", target_name,
                c0.streams, c0.waiting, c0.upstream_conns);
        for (size_t i = 0; i < MAX_FS; i++)
            if (up.streams[i].used)
                fprintf(stderr, "  backend stream %d on conn %d: ended %d responded %d kind %d\n", up.streams[i].id,
                        up.streams[i].fc->fd, up.streams[i].req_ended, up.streams[i].responded, up.streams[i].kind);
    }
    close(cfd);
    cfd = -1;
    settle();
    up.refuse = true;
    up_close_all();
    struct gp_census c;
    int i;
    for (i = 0; i < DRAIN_TURNS; i++) {
        turn();
        gp_census(&c);
        if (census_clean(&c))
            break;
    }
    if (i == DRAIN_TURNS)
        report_and_abort("connections not reaped after the client and the backend left", &c);
    gp_trim();

    tot.inputs++;
    tot.client_bytes += client_got;
    tot.alloc_failed += fm.failed;
    tot.fm_inputs += fm.failed > 0;
    if (stats_level >= 2)
        fprintf(stderr, "%s: input of %zu bytes: %u upstream requests, %u answered, %zu bytes back, %u allocations%s\n",
                target_name, size, up.requests, up.answered, client_got, fm.count, fm.failed ? " (some failed)" : "");
    fm.fail_at = 0;
    return 0;
}
