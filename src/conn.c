/* Socket transport: batched writes, deferred frees. */
#include "grelay/conn.h"
#include "grelay/log.h"
#include "grelay/tls.h"

#include <openssl/err.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_readable(struct ev_loop *loop, ev_io *io, int revents);
static void on_writable(struct ev_loop *loop, ev_io *io, int revents);

static void flush_task(struct gr_task *t) { conn_flush(container_of(t, struct conn, flush)); }

static void reap_task(struct gr_task *t)
{
    struct conn *c = container_of(t, struct conn, reap);
    c->ops->destroy(c);
}

static void on_deadline(struct conn_timer *ct, enum conn_timer_kind kind)
{
    struct conn *c = container_of(ct, struct conn, timer);
    if (c->state != CONN_CLOSED && c->ops->on_deadline != NULL)
        c->ops->on_deadline(c, kind);
}

static void conn_setup(struct conn *c, struct worker *w, int fd, const struct conn_ops *ops)
{
    c->fd = fd;
    c->w = w;
    c->ops = ops;
    c->ssl = NULL;
    c->read_paused = c->out_paused = c->out_cap = c->hostile = c->tls_read_for_write = false;
    buf_init(&c->wbuf);
    gr_list_init(&c->flush.link);
    c->flush.run = flush_task;
    gr_list_init(&c->reap.link);
    c->reap.run = reap_task;
    conn_timer_init(&c->timer, w->loop, on_deadline);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void conn_init_accepted(struct conn *c, struct worker *w, int fd, const struct conn_ops *ops)
{
    conn_setup(c, w, fd, ops);
    c->state = CONN_OPEN;
    c->out_cap = true;
    ev_io_start(w->loop, &c->rio);
}

int conn_connect(struct conn *c, struct worker *w, const struct gr_addr *to, const struct conn_ops *ops, SSL *ssl)
{
    int fd = socket(to->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        SSL_free(ssl);
        return GR_ERR_IO;
    }
    conn_setup(c, w, fd, ops);
    if (connect(fd, (const struct sockaddr *)&to->ss, to->len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        c->fd = -1;
        SSL_free(ssl);
        errno = e;
        return GR_ERR_IO;
    }
    if (ssl != NULL) {
        c->ssl = ssl;
        SSL_set_fd(ssl, fd);
        SSL_set_connect_state(ssl);
    }
    c->state = CONN_CONNECTING;
    ev_io_start(w->loop, &c->wio);
    return GR_OK;
}

void conn_set_liveness(struct conn *c, uint32_t idle_s, uint32_t intvl_s, uint32_t cnt, uint32_t user_timeout_ms)
{
    int one = 1, idle = (int)idle_s, intvl = (int)intvl_s, n = (int)cnt;
    unsigned int ut = user_timeout_ms;
    if (setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) != 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &n, sizeof(n)) != 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut)) != 0)
        log_debug("TCP keepalive options: %s", strerror(errno));
}

/* One step of a TLS handshake; on_connect when it completes. */
static void tls_step(struct conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->state = CONN_OPEN;
        ev_io_stop(c->w->loop, &c->wio);
        ev_io_start(c->w->loop, &c->rio);
        if (c->ops->on_connect)
            c->ops->on_connect(c);
        if (c->state == CONN_OPEN)
            conn_want_flush(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        ev_io_stop(c->w->loop, &c->wio);
        ev_io_start(c->w->loop, &c->rio);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        ev_io_start(c->w->loop, &c->wio);
        return;
    }
    char why[300];
    conn_close(c, GR_ERR_IO, tls_error(c->ssl, rc, why, sizeof(why)));
}

void conn_start_tls(struct conn *c, SSL *ssl)
{
    c->ssl = ssl;
    SSL_set_fd(ssl, c->fd);
    SSL_set_accept_state(ssl);
    c->state = CONN_HANDSHAKE;
    tls_step(c);
}

void conn_adopt_tls(struct conn *c, SSL *ssl)
{
    c->ssl = ssl;
    /* Whatever the handshake already read must not wait for the socket. */
    ev_feed_event(c->w->loop, &c->rio, EV_READ);
}

/* Reading goes on unless the protocol or the output cap stopped it. */
static void update_reading(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->read_paused || c->out_paused)
        ev_io_stop(c->w->loop, &c->rio);
    else
        ev_io_start(c->w->loop, &c->rio);
}

void conn_pause_read(struct conn *c)
{
    c->read_paused = true;
    update_reading(c);
}

void conn_resume_read(struct conn *c)
{
    c->read_paused = false;
    update_reading(c);
}

void conn_set_hostile(struct conn *c) { c->hostile = true; }

/* The socket refuses more output now: wait until it is writable. A hostile
 * peer that is done is closed instead; a client whose output piles up is
 * no longer read (it would only make us queue more). Returns false when c
 * closed. */
static bool out_blocked(struct conn *c)
{
    if (c->hostile && c->ops->done(c)) {
        conn_close(c, GR_ERR_LIMIT, "abusive peer: closed without waiting for it to read");
        return false;
    }
    ev_io_start(c->w->loop, &c->wio);
    if (c->out_cap && !c->out_paused &&
        (c->wbuf.len >= WBUF_HIGH || (c->ops->backlog != NULL && c->ops->backlog(c) > CONN_BACKLOG_HIGH))) {
        c->out_paused = true;
        update_reading(c);
    }
    return true;
}

void conn_want_flush(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->out_cap) /* a client's: before the upstream flushes (worker_defer_first) */
        worker_defer_first(c->w, &c->flush);
    else
        worker_defer(c->w, &c->flush, false);
}

void conn_close(struct conn *c, int err, const char *why)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    ev_io_stop(c->w->loop, &c->rio);
    ev_io_stop(c->w->loop, &c->wio);
    conn_timer_stop(&c->timer);
    gr_list_remove(&c->flush.link);
    if (c->ssl != NULL && c->fd >= 0 && err == GR_OK)
        SSL_shutdown(c->ssl); /* best effort close_notify on a clean end */
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    buf_clear(&c->wbuf, &c->w->chunks);
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* no close_notify: the socket is already gone */
        c->ssl = NULL;
    }
    c->ops->on_close(c, err, why);
    worker_defer(c->w, &c->reap, true);
}

/* What one SSL_write takes from the output: its first chunk, or, when
 * that is short and more follow, up to a record's plaintext (16 KiB)
 * gathered into the worker's tls_record. Frame headers, relinked DATA
 * chunks and trailers then leave as one record and one write() instead of
 * one each. A retry after WANT_WRITE gathers the same bytes again from the
 * same head, never fewer (OpenSSL requires both). */
static size_t tls_next_record(struct conn *c, const struct iovec *iov, int cnt, const void **out)
{
    const size_t record = sizeof(c->w->tls_record);
    if (cnt == 1 || iov[0].iov_len >= record) {
        *out = iov[0].iov_base;
        return iov[0].iov_len;
    }
    size_t n = 0;
    for (int i = 0; i < cnt && n < record; i++) {
        size_t k = iov[i].iov_len < record - n ? iov[i].iov_len : record - n;
        memcpy(c->w->tls_record + n, iov[i].iov_base, k);
        n += k;
    }
    *out = c->w->tls_record;
    return n;
}

void conn_flush(struct conn *c)
{
    gr_list_remove(&c->flush.link);
    if (c->state != CONN_OPEN)
        return;
    struct chunk_pool *pool = &c->w->chunks;
    for (;;) {
        while (c->wbuf.len < WBUF_HIGH) {
            const uint8_t *data;
            ssize_t n = c->ops->pull(c, &data);
            if (n < 0) {
                conn_close(c, GR_ERR_PROTO, "protocol error while sending");
                return;
            }
            if (n == 0)
                break;
            if (buf_append(&c->wbuf, pool, data, (size_t)n) != GR_OK) {
                conn_close(c, GR_ERR_NOMEM, "out of memory");
                return;
            }
        }
        if (c->wbuf.len == 0)
            break;
        struct iovec iov[16];
        int cnt = buf_peek_iov(&c->wbuf, iov, 16);
        ssize_t w;
        if (c->ssl != NULL) {
            const void *rec;
            size_t len = tls_next_record(c, iov, cnt, &rec);
            ERR_clear_error();
            int r = SSL_write(c->ssl, rec, (int)len);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) {
                    out_blocked(c);
                    return;
                }
                if (e == SSL_ERROR_WANT_READ) {
                    c->tls_read_for_write = true; /* TLS must read first, paused or not */
                    ev_io_start(c->w->loop, &c->rio);
                    return;
                }
                char why[300];
                conn_close(c, GR_ERR_IO, tls_error(c->ssl, r, why, sizeof(why)));
                return;
            }
            buf_drain(&c->wbuf, pool, (size_t)r);
            continue;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                out_blocked(c);
                return;
            }
            if (errno == EINTR)
                continue;
            conn_close(c, GR_ERR_IO, strerror(errno));
            return;
        }
        buf_drain(&c->wbuf, pool, (size_t)w);
        if (c->wbuf.len > 0) {
            /* The kernel took less than offered: wait until it has room. */
            out_blocked(c);
            return;
        }
    }
    ev_io_stop(c->w->loop, &c->wio);
    if (c->out_paused) {
        c->out_paused = false; /* all our output left: the peer reads again */
        update_reading(c);
    }
    if (c->ops->done(c))
        conn_close(c, GR_OK, "finished");
}

/* One read, in clear or through TLS: returns the bytes read into the
 * worker's buffer, 0 when the socket has nothing more now, or -1 after
 * closing c (the peer left, or an error). */
/* One read's worth when other watchers wait (on_readable): a 16 KiB gRPC
 * message with its HEADERS and frame headers (16,444 bytes from h2load)
 * in one read, where 16 KiB took two wake-ups; through TLS one record
 * (16 KiB) at most whatever this says. */
#define FAIR_READ (32u * 1024)

static ssize_t conn_recv(struct conn *c, size_t max)
{
    struct worker *w = c->w;
    if (c->ssl == NULL) {
        ssize_t n = recv(c->fd, w->rbuf, max, 0);
        if (n > 0)
            return n;
        if (n == 0)
            conn_close(c, GR_ERR_CLOSED, "peer closed the connection");
        else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        else
            conn_close(c, GR_ERR_IO, strerror(errno));
        return -1;
    }
    ERR_clear_error();
    int n = SSL_read(c->ssl, w->rbuf, (int)max);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        ev_io_start(w->loop, &c->wio);
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        conn_close(c, GR_ERR_CLOSED, "peer closed the connection");
        return -1;
    }
    char why[300];
    conn_close(c, e == SSL_ERROR_SYSCALL ? GR_ERR_CLOSED : GR_ERR_IO, tls_error(c->ssl, n, why, sizeof(why)));
    return -1;
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct conn *c = container_of(io, struct conn, rio);
    if (c->state == CONN_HANDSHAKE) {
        tls_step(c);
        return;
    }
    /* A few reads per event when no other watcher waits in this loop
     * iteration (fewer wake-ups); one read of FAIR_READ when others do, so
     * that a flooding connection does not hold the loop: each connection's
     * share of an iteration stays small (docs/limits.md, One connection
     * does not hold the loop). A pause (conn_pause_read, the output cap)
     * stops the reads at once. */
    bool others = ev_pending_count(loop) > 0;
    int rounds = others ? 1 : c->ssl != NULL ? 8 : 4;
    size_t max = others ? FAIR_READ : sizeof(c->w->rbuf);
    for (int i = 0; i < rounds && c->state == CONN_OPEN; i++) {
        if ((c->read_paused || c->out_paused) && !c->tls_read_for_write)
            break;
        c->tls_read_for_write = false;
        ssize_t n = conn_recv(c, max);
        if (n <= 0)
            break;
        int rc = c->ops->on_read(c, c->w->rbuf, (size_t)n);
        if (rc != GR_OK) {
            conn_close(c, rc, rc == GR_ERR_PROTO ? "protocol error from peer" : log_strerror(rc));
            return;
        }
        if (c->ssl == NULL && (size_t)n < max)
            break; /* the socket is drained */
    }
    if (c->state == CONN_OPEN) {
        if (c->read_paused || c->out_paused)
            update_reading(c); /* started for TLS, or paused by what was read */
        conn_want_flush(c);
    }
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct conn *c = container_of(io, struct conn, wio);
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            conn_close(c, GR_ERR_IO, strerror(err));
            return;
        }
        if (c->ssl != NULL) {
            c->state = CONN_HANDSHAKE;
            tls_step(c);
            return;
        }
        c->state = CONN_OPEN;
        ev_io_stop(loop, &c->wio);
        ev_io_start(loop, &c->rio);
        if (c->ops->on_connect)
            c->ops->on_connect(c);
    }
    if (c->state == CONN_HANDSHAKE) {
        tls_step(c);
        return;
    }
    if (c->ssl != NULL && c->state == CONN_OPEN && c->wbuf.len == 0)
        ev_feed_event(loop, &c->rio, EV_READ); /* TLS may have wanted to write for a read */
    conn_flush(c);
}
