/* Tells HTTP/2 from HTTP/1.1 by the first bytes, then hands the socket over. */
#include "grelay/sniff.h"
#include "grelay/conn.h"
#include "grelay/h1_server.h"
#include "grelay/h2_server.h"
#include "grelay/worker.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(preface) - 1)

struct sniff {
    struct conn io;                   /* first member */
    const struct gr_listener_cfg *cfg;
    uint8_t seen[PREFACE_LEN];        /* bytes so far, while they could still be the preface */
    size_t n;
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
    conn_close(c, GR_OK, "handed over");
    if (h2)
        dconn_accept(w, sn->cfg, fd, all, sn->n + len);
    else
        h1_accept(w, sn->cfg, fd, all, sn->n + len);
    return GR_OK;
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
    (void)c;
    (void)err;
    (void)why;
}

static void sniff_destroy(struct conn *c) { free(container_of(c, struct sniff, io)); }

static const struct conn_ops sniff_ops = {
    .on_read = sniff_on_read,
    .pull = sniff_pull,
    .done = sniff_done,
    .on_close = sniff_on_close,
    .destroy = sniff_destroy,
};

void sniff_accept(struct worker *w, const struct gr_listener_cfg *l, int fd)
{
    struct sniff *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        close(fd);
        return;
    }
    sn->cfg = l;
    conn_init_accepted(&sn->io, w, fd, &sniff_ops);
}
