/* The admin endpoint's HTTP/1.1 server (see include/grelay/admin.h).
 * Requests are tiny, so they are parsed by hand: a request line, headers
 * of which only Content-Length, Transfer-Encoding and Connection matter,
 * and a body of Content-Length bytes. Everything is bounded: the request
 * (ADMIN_MAX_REQUEST), the connections (ADMIN_MAX_CONNS) and the time a
 * connection may sit without progress (ADMIN_IDLE_S). One request is
 * answered at a time per connection; pipelined ones wait in the input. */
#include "grelay/admin.h"
#include "grelay/common.h"
#include "grelay/log.h"
#include "grelay/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_REQUEST (64 * 1024)  /* request head and body together */
#define ADMIN_MAX_CONNS 64             /* connections past it are closed at once */
#define ADMIN_IDLE_S 10.0              /* a connection with no progress this long is closed */
#define ADMIN_LINGER_S 2.0             /* after a final answer: how long its unread input is drained */
#define ADMIN_MAX_ROUTES 32            /* endpoints */
#define ADMIN_MAX_BODY_OUT (64u << 20) /* an answer larger than this is a 500 */

/* One endpoint. */
struct admin_route {
    char method[8];   /* "GET" or "POST" */
    char path[64];    /* exact path */
    admin_handler fn; /* writes the answer */
    void *ctx;        /* fn's first argument */
};

struct admin {
    struct ev_loop *loop;                        /* the main thread's loop */
    int fd;                                      /* the listening socket */
    ev_io accept_io;                             /* readable: connections to accept */
    bool allow_mutations;                        /* POST endpoints run; else 403 */
    struct admin_route routes[ADMIN_MAX_ROUTES]; /* endpoints, in the order added */
    size_t n_routes;                             /* entries of routes */
    struct gr_list conns;                        /* struct admin_conn */
    size_t n_conns;                              /* entries of conns */
    uint64_t refused;                            /* connections closed at once since the last warning */
    ev_tstamp refused_logged;                    /* when that warning was last written (one a second at most) */
};

/* What one connection is doing. */
enum conn_state {
    CONN_READ,   /* reading a request */
    CONN_WRITE,  /* writing an answer; input waits */
    CONN_LINGER, /* answered and shut down for writing: draining input until EOF */
};

/* One admin client connection. */
struct admin_conn {
    struct gr_list link;   /* in admin.conns */
    struct admin *a;       /* its server */
    int fd;                /* the socket */
    ev_io io;              /* readable or writable, by state */
    int events;            /* what io waits for now */
    ev_timer timer;        /* idle (ADMIN_IDLE_S) or linger (ADMIN_LINGER_S) */
    enum conn_state state; /* see above */
    bool close_after;      /* the answer being written is the last one */
    bool eof;              /* the peer shut its side: answer what was read, then close */
    char *in;              /* request bytes read: ADMIN_MAX_REQUEST + 1 (a NUL) */
    size_t in_len;         /* bytes at in */
    struct gr_sbuf out;    /* the answer being written */
    size_t out_off;        /* bytes of out written */
};

/* A parsed request, pointing into the connection's input. */
struct request {
    char method[8];   /* as sent */
    char path[256];   /* before '?' */
    char query[1024]; /* after '?', or "" */
    size_t head_len;  /* bytes of the head, blank line included */
    size_t body_len;  /* Content-Length */
    bool keep_alive;  /* HTTP/1.1 without Connection: close, or 1.0 with keep-alive */
    bool origin;      /* an Origin header came: a browser sent it (POSTs are refused) */
    bool has_length;  /* a Content-Length came (a second one must agree) */
};

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

static void conn_close(struct admin_conn *c)
{
    ev_io_stop(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timer);
    close(c->fd);
    gr_list_remove(&c->link);
    c->a->n_conns--;
    sbuf_free(&c->out);
    free(c->in);
    free(c);
}

static void conn_watch(struct admin_conn *c, int events)
{
    if (c->events == events)
        return;
    c->events = events;
    ev_io_stop(c->a->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->a->loop, &c->io);
}

/* Queues an answer: the head, then body (blen bytes). allow: the methods of
 * a 405, or NULL. */
static void conn_answer(struct admin_conn *c, int status, const char *type, const char *body, size_t blen,
                        const char *allow, bool keep_alive)
{
    sbuf_free(&c->out);
    c->out_off = 0;
    c->close_after = !keep_alive || c->eof;
    sbuf_printf(&c->out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s%s%s%s\r\n",
                status, status_text(status), type, blen, allow ? "Allow: " : "", allow ? allow : "",
                allow ? "\r\n" : "", keep_alive ? "" : "Connection: close\r\n");
    sbuf_add(&c->out, body, blen);
    if (c->out.failed) {
        log_error("admin: out of memory for an answer");
        sbuf_free(&c->out);
        c->close_after = true; /* nothing to write: the connection ends */
    }
    c->state = CONN_WRITE;
}

/* A plain-text error answer that ends the connection. */
static void conn_fail(struct admin_conn *c, int status, const char *msg)
{
    conn_answer(c, status, "text/plain; charset=utf-8", msg, strlen(msg), NULL, false);
}

/* Copies [s, s+n) into dst (cap bytes, NUL-terminated); false if too long. */
static bool copy_field(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

/* Reads one header line [s, e) into r; returns 0, or an HTTP status. */
static int parse_header(struct request *r, const char *s, const char *e)
{
    const char *colon = memchr(s, ':', (size_t)(e - s));
    if (colon == NULL || colon == s)
        return 400;
    size_t nlen = (size_t)(colon - s);
    if (memchr(s, ' ', nlen) != NULL || memchr(s, '\t', nlen) != NULL)
        return 400; /* RFC 9112 5.1: no whitespace in a field name (a smuggling vector) */
    const char *v = colon + 1;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    size_t vlen = (size_t)(e - v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (nlen == 14 && strncasecmp(s, "content-length", nlen) == 0) {
        uint64_t n = 0;
        if (vlen == 0 || vlen > 12)
            return vlen == 0 ? 400 : 413;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 400;
            n = n * 10 + (uint64_t)(v[i] - '0');
        }
        if (n > ADMIN_MAX_REQUEST)
            return 413;
        if (r->has_length && r->body_len != (size_t)n)
            return 400;
        r->has_length = true;
        r->body_len = (size_t)n;
    } else if (nlen == 17 && strncasecmp(s, "transfer-encoding", nlen) == 0) {
        return 411; /* bodies are sent with a Content-Length */
    } else if (nlen == 6 && strncasecmp(s, "origin", nlen) == 0) {
        r->origin = true;
    } else if (nlen == 10 && strncasecmp(s, "connection", nlen) == 0) {
        if (vlen == 5 && strncasecmp(v, "close", 5) == 0)
            r->keep_alive = false;
        else if (vlen == 10 && strncasecmp(v, "keep-alive", 10) == 0)
            r->keep_alive = true;
    }
    return 0;
}

/* Parses the request line and headers of in[0, head_len). Returns 0 or an
 * HTTP status for the error. */
static int parse_head(struct request *r, const char *in, size_t head_len)
{
    const char *end = in + head_len - 2; /* at the blank line's CRLF */
    const char *eol = strstr(in, "\r\n");
    const char *sp1 = memchr(in, ' ', (size_t)(eol - in));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp2 == NULL || !copy_field(r->method, sizeof(r->method), in, (size_t)(sp1 - in)))
        return 400;
    const char *target = sp1 + 1;
    const char *q = memchr(target, '?', (size_t)(sp2 - target));
    const char *pend = q ? q : sp2;
    if (!copy_field(r->path, sizeof(r->path), target, (size_t)(pend - target)) ||
        !copy_field(r->query, sizeof(r->query), q ? q + 1 : sp2, q ? (size_t)(sp2 - q - 1) : 0))
        return 414;
    if (r->path[0] != '/')
        return 400;
    size_t vlen = (size_t)(eol - sp2 - 1);
    if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0)
        r->keep_alive = true;
    else if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0)
        r->keep_alive = false;
    else
        return 400;
    for (const char *s = eol + 2; s < end;) {
        const char *e = strstr(s, "\r\n");
        int st = parse_header(r, s, e);
        if (st != 0)
            return st;
        s = e + 2;
    }
    return 0;
}

/* Runs the endpoint for r; body is NUL-terminated. */
static void dispatch(struct admin_conn *c, const struct request *r, const char *body)
{
    struct admin *a = c->a;
    const struct admin_route *hit = NULL;
    char allow[32] = "";
    for (size_t i = 0; i < a->n_routes; i++) {
        if (strcmp(a->routes[i].path, r->path) != 0)
            continue;
        if (strcmp(a->routes[i].method, r->method) == 0)
            hit = &a->routes[i];
        snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s", allow[0] ? ", " : "",
                 a->routes[i].method);
    }
    const char *text = "text/plain; charset=utf-8";
    if (hit == NULL && allow[0] == '\0') {
        static const char nf[] = "admin: no such endpoint (docs/observability.md lists them)\n";
        conn_answer(c, 404, text, nf, sizeof(nf) - 1, NULL, r->keep_alive);
        return;
    }
    if (hit == NULL) {
        char msg[96];
        int n = snprintf(msg, sizeof(msg), "admin: %s takes %s\n", r->path, allow);
        conn_answer(c, 405, text, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1, allow, r->keep_alive);
        return;
    }
    if (strcmp(hit->method, "POST") == 0 && !a->allow_mutations) {
        static const char no[] = "admin: allow_mutations is false\n";
        conn_answer(c, 403, text, no, sizeof(no) - 1, NULL, r->keep_alive);
        return;
    }
    /* A web page the operator's browser opened could POST here (a form needs
     * no CORS preflight; DNS rebinding defeats a Host check): mutations are
     * for tools, which send no Origin. */
    if (strcmp(hit->method, "POST") == 0 && r->origin) {
        static const char web[] = "admin: POST from a web page (Origin header) refused\n";
        conn_answer(c, 403, text, web, sizeof(web) - 1, NULL, r->keep_alive);
        return;
    }
    struct gr_sbuf out;
    sbuf_init(&out);
    out.max = ADMIN_MAX_BODY_OUT;
    struct admin_reply reply = {.status = 200, .content_type = text};
    hit->fn(hit->ctx, r->query, body, &out, &reply);
    log_debug("admin: %s %s: %d", r->method, r->path, reply.status);
    if (out.failed) {
        static const char oom[] = "admin: the answer did not fit in memory\n";
        conn_answer(c, 500, text, oom, sizeof(oom) - 1, NULL, r->keep_alive);
    } else {
        conn_answer(c, reply.status, reply.content_type, out.p ? out.p : "", out.len, NULL, r->keep_alive);
    }
    sbuf_free(&out);
}

/* Answers the first request of the input if it is whole (or a malformed
 * one); returns whether an answer is queued. */
static bool conn_process(struct admin_conn *c)
{
    c->in[c->in_len] = '\0';
    char *blank = strstr(c->in, "\r\n\r\n");
    if (blank == NULL) {
        if (c->in_len >= ADMIN_MAX_REQUEST)
            conn_fail(c, 431, "admin: request head larger than 64 KiB\n");
        else if (memchr(c->in, '\0', c->in_len) != NULL)
            conn_fail(c, 400, "admin: NUL byte in the request\n");
        else
            return false;
        return true;
    }
    struct request r = {0};
    r.head_len = (size_t)(blank - c->in) + 4;
    int st = parse_head(&r, c->in, r.head_len);
    if (st == 0 && r.head_len + r.body_len > ADMIN_MAX_REQUEST)
        st = 413;
    if (st != 0) {
        conn_fail(c, st, st == 413 ? "admin: request larger than 64 KiB\n" : "admin: malformed request\n");
        return true;
    }
    size_t total = r.head_len + r.body_len;
    if (c->in_len < total)
        return false;
    char saved = c->in[total];
    c->in[total] = '\0';
    dispatch(c, &r, c->in + r.head_len);
    c->in[total] = saved;
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
    return true;
}

/* Reads what is there (discards it while lingering); false when the
 * connection was closed: an error, or EOF while lingering. */
static bool conn_read(struct admin_conn *c)
{
    for (int i = 0; i < 16 && !c->eof; i++) {
        char drop[4096];
        bool linger = c->state == CONN_LINGER;
        char *dst = linger ? drop : c->in + c->in_len;
        size_t room = linger ? sizeof(drop) : ADMIN_MAX_REQUEST - c->in_len;
        if (room == 0)
            return true;
        ssize_t n = read(c->fd, dst, room);
        if (n > 0) {
            if (!linger)
                c->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || linger) {
            conn_close(c);
            return false;
        }
        c->eof = true;
    }
    return true;
}

enum flush_result { FLUSH_DONE, FLUSH_AGAIN, FLUSH_CLOSED };

/* Writes what is queued. */
static enum flush_result conn_flush(struct admin_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return FLUSH_AGAIN;
        if (n < 0) {
            conn_close(c);
            return FLUSH_CLOSED;
        }
        c->out_off += (size_t)n;
    }
    sbuf_free(&c->out);
    c->out_off = 0;
    return FLUSH_DONE;
}

/* The last answer is out: reads what the peer still sends, for a while,
 * so that closing with unread input does not reset the answer away. */
static void conn_linger(struct admin_conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    ev_timer_stop(c->a->loop, &c->timer);
    ev_timer_set(&c->timer, ADMIN_LINGER_S, 0.0);
    ev_timer_start(c->a->loop, &c->timer);
    conn_watch(c, EV_READ);
}

/* Writes the answer queued, then answers the requests waiting in the
 * input, one after the other, until one is incomplete or the socket is
 * full. Bounded per event; a full socket resumes on EV_WRITE. */
static void conn_run(struct admin_conn *c)
{
    for (int i = 0; i < 64; i++) {
        if (c->state == CONN_WRITE) {
            enum flush_result f = conn_flush(c);
            if (f == FLUSH_CLOSED)
                return;
            if (f == FLUSH_AGAIN) {
                conn_watch(c, EV_WRITE);
                return;
            }
            if (c->close_after) {
                conn_linger(c);
                return;
            }
            c->state = CONN_READ;
        }
        if (!conn_process(c)) {
            if (c->eof)
                conn_close(c); /* the peer is gone, with no whole request left */
            else
                conn_watch(c, EV_READ);
            return;
        }
    }
    conn_watch(c, EV_WRITE); /* more pipelined requests: on the next turn */
}

static void on_conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct admin_conn *c = container_of(w, struct admin_conn, io);
    if (c->state == CONN_LINGER) {
        (void)conn_read(c);
        return;
    }
    ev_timer_again(c->a->loop, &c->timer);
    if ((revents & EV_READ) && c->state == CONN_READ && !conn_read(c))
        return;
    conn_run(c);
}

static void on_conn_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(container_of(t, struct admin_conn, timer));
}

/* Serves the accepted socket fd (non-blocking); false when the connections
 * are at ADMIN_MAX_CONNS or memory is out (the caller closes fd). */
static bool conn_new(struct admin *a, int fd)
{
    struct admin_conn *c = a->n_conns < ADMIN_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    if (c != NULL && (c->in = malloc(ADMIN_MAX_REQUEST + 1)) == NULL) {
        free(c);
        c = NULL;
    }
    if (c == NULL)
        return false;
    c->a = a;
    c->fd = fd;
    gr_list_insert_tail(&a->conns, &c->link);
    a->n_conns++;
    c->events = EV_READ;
    ev_io_init(&c->io, on_conn_io, fd, EV_READ);
    ev_io_start(a->loop, &c->io);
    ev_init(&c->timer, on_conn_timer);
    c->timer.repeat = ADMIN_IDLE_S;
    ev_timer_again(a->loop, &c->timer);
    return true;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct admin *a = container_of(w, struct admin, accept_io);
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("admin: accept: %s", strerror(errno));
            return;
        }
        if (!conn_new(a, fd)) {
            close(fd);
            a->refused++;
            if (ev_now(loop) - a->refused_logged >= 1.0) {
                log_warn("admin: %s: %llu new connection%s closed",
                         a->n_conns < ADMIN_MAX_CONNS ? "out of memory" : "64 connections open",
                         (unsigned long long)a->refused, a->refused == 1 ? "" : "s");
                a->refused = 0;
                a->refused_logged = ev_now(loop);
            }
        }
    }
}

/* A listening socket on addr: the one a binary upgrade handed over, or a new one. */
static int listen_on(const struct gr_addr *addr)
{
    int fd = upgrade_take(ADMIN_UPGRADE_NAME, addr);
    if (fd >= 0)
        return fd;
    fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

struct admin *admin_new(struct ev_loop *loop, const struct gr_admin_cfg *cfg, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    a->fd = listen_on(&cfg->address);
    if (a->fd < 0) {
        snprintf(err, errlen, "admin: cannot listen on %s: %s", cfg->address.text, strerror(errno));
        free(a);
        return NULL;
    }
    /* An inherited socket may be blocking: accepts must not be. */
    int fl = fcntl(a->fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(a->fd, F_SETFL, fl | O_NONBLOCK);
    a->loop = loop;
    a->allow_mutations = cfg->allow_mutations;
    gr_list_init(&a->conns);
    ev_io_init(&a->accept_io, on_accept, a->fd, EV_READ);
    ev_io_start(loop, &a->accept_io);
    return a;
}

void admin_route(struct admin *a, const char *method, const char *path, admin_handler fn, void *ctx)
{
    if (a->n_routes == ADMIN_MAX_ROUTES || strlen(method) >= sizeof(a->routes[0].method) ||
        strlen(path) >= sizeof(a->routes[0].path)) {
        log_error("admin: cannot add %s %s", method, path);
        return;
    }
    struct admin_route *r = &a->routes[a->n_routes++];
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->fn = fn;
    r->ctx = ctx;
}

void admin_set_mutations(struct admin *a, bool allow) { a->allow_mutations = allow; }

int admin_fd(const struct admin *a) { return a->fd; }

void admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    struct gr_list *pos, *tmp;
    gr_list_for_each_safe (pos, tmp, &a->conns)
        conn_close(container_of(pos, struct admin_conn, link));
    ev_io_stop(a->loop, &a->accept_io);
    close(a->fd);
    free(a);
}
