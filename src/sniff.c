/* Tells HTTP/2 from HTTP/1.1 by TLS ALPN or by the first bytes, then hands
 * the socket (and its TLS session) over. */
#include "grelay/sniff.h"
#include "grelay/conn.h"
#include "grelay/log.h"
#include "grelay/h1_server.h"
#include "grelay/h2_common.h"
#include "grelay/h2_server.h"
#include "grelay/worker.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char preface[] = H2_PREFACE;
#define PREFACE_LEN H2_PREFACE_LEN

struct sniff {
    struct conn io;                    /* first member */
    const struct gr_listener_cfg *cfg; /* the listener it came in on */
    ev_tstamp accepted;                /* when: the protocol's request_headers_timeout counts from it */
    bool handed_over;                  /* the socket (and its max_connections slot) went to a protocol */
    struct gr_list link;               /* in worker->sniffing */
    uint8_t seen[PREFACE_LEN];         /* bytes so far, while they could still be the preface */
    size_t n;                          /* bytes of seen[] */
};

static int sniff_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct sniff *sn = container_of(c, struct sniff, io);
    size_t take = len < PREFACE_LEN - sn->n ? len : PREFACE_LEN - sn->n;
    bool h2 = memcmp(preface + sn->n, data, take) == 0;
    if (h2 && sn->n + take < PREFACE_LEN) {
        memcpy(sn->seen + sn->n, data, take); /* a prefix of the preface: wait */
        sn->n += take;
        return GR_OK;
    }
    /* Decided: hand the socket and every byte read so far to the protocol. */
    uint8_t all[PREFACE_LEN + WORKER_READ_BUF];
    memcpy(all, sn->seen, sn->n);
    memcpy(all + sn->n, data, len);
    int fd = c->fd;
    struct worker *w = c->w;
    c->fd = -1; /* no longer ours to close */
    sn->handed_over = true;
    conn_close(c, GR_OK, "handed over");
    if (h2)
        h2_server_accept(w, sn->cfg, fd, NULL, all, sn->n + len, sn->accepted);
    else
        h1_server_accept(w, sn->cfg, fd, NULL, all, sn->n + len, sn->accepted);
    return GR_OK;
}

/* TLS is up: ALPN says which protocol takes the connection. */
static void sniff_on_tls(struct conn *c)
{
    struct sniff *sn = container_of(c, struct sniff, io);
    const unsigned char *proto = NULL;
    unsigned int plen = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    bool h1 = plen == 8 && memcmp(proto, "http/1.1", 8) == 0;
    int fd = c->fd;
    SSL *ssl = c->ssl;
    struct worker *w = c->w;
    c->fd = -1;
    c->ssl = NULL; /* both go to the protocol */
    sn->handed_over = true;
    conn_close(c, GR_OK, "handed over");
    if (h1)
        h1_server_accept(w, sn->cfg, fd, ssl, NULL, 0, sn->accepted);
    else
        h2_server_accept(w, sn->cfg, fd, ssl, NULL, 0, sn->accepted); /* h2, or no ALPN at all */
}

/* CONN_TIMER_HEADER: the TLS handshake's handshake_timeout and the
 * listener's request_headers_timeout, whichever ends first (both count
 * from accept); CONN_TIMER_IDLE: idle_timeout, when it is the shorter. */
static void sniff_on_deadline(struct conn *c, enum conn_timer_kind kind)
{
    if (kind == CONN_TIMER_IDLE)
        conn_close(c, GR_ERR_IO, "idle_timeout before the protocol was known");
    else if (kind == CONN_TIMER_HEADER)
        conn_close(c, GR_ERR_IO,
                   c->state == CONN_HANDSHAKE ? "TLS handshake not complete in time"
                                              : "no request within request_headers_timeout");
}

static ssize_t sniff_pull(struct conn *c, const uint8_t **data)
{
    (void)c;
    (void)data;
    return 0;
}

static bool sniff_done(struct conn *c)
{
    (void)c;
    return false;
}

static void sniff_on_close(struct conn *c, int err, const char *why)
{
    struct sniff *sn = container_of(c, struct sniff, io);
    gr_list_remove(&sn->link);
    if (err != GR_OK)
        log_debug("listener %s: client connection closed: %s", sn->cfg->name, why);
}

static void sniff_destroy(struct conn *c)
{
    struct sniff *sn = container_of(c, struct sniff, io);
    if (!sn->handed_over)
        worker_conn_release(c->w, sn->cfg);
    free(sn);
}

static const struct conn_ops sniff_ops = {
    .on_read = sniff_on_read,
    .pull = sniff_pull,
    .done = sniff_done,
    .on_connect = sniff_on_tls,
    .on_close = sniff_on_close,
    .destroy = sniff_destroy,
    .on_deadline = sniff_on_deadline,
};

void sniff_accept(struct worker *w, const struct gr_listener_cfg *l, int fd)
{
    struct sniff *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        close(fd);
        worker_conn_release(w, l);
        return;
    }
    sn->cfg = l;
    sn->accepted = ev_now(w->loop);
    conn_init_accepted(&sn->io, w, fd, &sniff_ops);
    gr_list_insert_tail(&w->sniffing, &sn->link);
    /* Slowloris before the protocol is known (zero bytes, a preface one
     * byte at a time, a TLS handshake that never ends) is bounded here. */
    uint64_t header_ms = l->request_headers_timeout_ms;
    if (l->tls.set && (header_ms == 0 || l->tls.handshake_timeout_ms < header_ms))
        header_ms = l->tls.handshake_timeout_ms;
    if (header_ms > 0)
        conn_timer_set(&sn->io.timer, CONN_TIMER_HEADER, (ev_tstamp)header_ms / 1e3);
    if (l->idle_timeout_ms > 0)
        conn_timer_set(&sn->io.timer, CONN_TIMER_IDLE, (ev_tstamp)l->idle_timeout_ms / 1e3);
    if (l->tls.set) {
        SSL *ssl = SSL_new(l->tls.ctx);
        if (ssl == NULL) {
            conn_close(&sn->io, GR_ERR_NOMEM, "out of memory");
            return;
        }
        conn_start_tls(&sn->io, ssl);
    }
}

void sniff_close_all(struct worker *w)
{
    while (!gr_list_empty(&w->sniffing)) {
        struct sniff *sn = container_of(w->sniffing.next, struct sniff, link);
        conn_close(&sn->io, GR_OK, "shutting down");
    }
}

void sniff_close_slot(struct worker *w, size_t slot)
{
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->sniffing) {
        struct sniff *sn = container_of(it, struct sniff, link);
        if (sn->cfg->slot == slot)
            conn_close(&sn->io, GR_OK, "its listener was removed by a reload");
    }
}
