/* DNS discovery with c-ares, driven by libev on the main thread. */
#include "grelay/dns.h"
#include "grelay/cluster.h"
#include "grelay/log.h"
#include "grelay/stats.h"
#include "grelay/worker.h"

#include <ares.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dns_cluster;

/* One host name of a cluster and its last good answer. */
struct dns_host {
    struct dns_cluster *dc;           /* the cluster it belongs to */
    const struct gr_endpoint_cfg *ep; /* host, port, weight */
    struct endpoint *last;            /* last good addresses (logical_dns: one); malloc'd, owned */
    size_t n_last;                    /* entries in last */
    bool resolved;                    /* has had a good answer */
    bool in_flight;                   /* a lookup is under way */
    bool failing;                     /* the last lookup failed (logged once) */
    uint64_t backoff_ms;              /* failing: the next retry's base delay (doubles to dns_refresh); 0: none */
    char error[128];                  /* why the last lookup failed */
    ev_timer refresh;                 /* next lookup */
};

/* A socket c-ares asked us to watch. */
struct dns_sock {
    struct dns_sock *next;  /* next in dc->socks */
    struct dns_cluster *dc; /* whose channel opened the socket */
    ares_socket_t fd;       /* the socket; c-ares owns and closes it */
    ev_io io;               /* watches fd for what c-ares asked (read, write or both) */
};

/* The DNS state of one cluster with strict_dns or logical_dns discovery. */
struct dns_cluster {
    struct dns *d;                    /* the resolver it belongs to */
    const struct gr_cluster_cfg *cfg; /* the cluster's config: endpoints, resolvers, refresh */
    size_t index;                     /* in cfg->clusters and the workers' clusters */
    ares_channel channel;             /* this cluster's c-ares channel (its own dns_resolvers) */
    bool channel_ok;                  /* channel was created: lookups are made and it must be destroyed */
    struct dns_host *hosts;           /* one per host-name endpoint, in the order written */
    size_t n_hosts;                   /* entries in hosts (0 if they could not be allocated) */
    struct dns_sock *socks;           /* the sockets the channel has open, most recent first */
    ev_timer timeout;                 /* c-ares' next timeout (ares_timeout), armed while queries are out */
};

/* The resolver: every DNS-discovered cluster, on the main thread's loop. */
struct dns {
    struct ev_loop *loop;         /* the main thread's loop */
    struct worker **workers;      /* every changed endpoint set is published to each; not owned */
    size_t n_workers;             /* entries in workers */
    struct dns_cluster *clusters; /* the clusters with DNS discovery only (see dns_cluster.index) */
    size_t n_clusters;            /* entries in clusters */
    struct dns_sink sink;         /* where changed sets go (the health checker), or straight to workers */
    bool stopping;                /* dns_stop is under way: late answers are dropped */
    uint64_t rng;                 /* xorshift state: retry jitter */
};

static void publish(struct dns_cluster *dc)
{
    const struct gr_cluster_cfg *cl = dc->cfg;
    size_t n = 0;
    for (size_t i = 0; i < cl->n_endpoints; i++)
        n += !cl->endpoints[i].is_name;
    for (size_t h = 0; h < dc->n_hosts; h++)
        n += dc->hosts[h].n_last;
    struct endpoint_set *set = cluster_set_new(n);
    if (set == NULL) {
        log_error("dns: cluster %s: out of memory", cl->name);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < cl->n_endpoints; i++) {
        const struct gr_endpoint_cfg *ep = &cl->endpoints[i];
        if (!ep->is_name)
            cluster_endpoint_fill(&set->eps[k++], (const struct sockaddr *)&ep->address.ss, ep->address.len, ep->port,
                                  NULL, ep->weight);
    }
    for (size_t h = 0; h < dc->n_hosts; h++)
        for (size_t j = 0; j < dc->hosts[h].n_last; j++)
            set->eps[k++] = dc->hosts[h].last[j];
    if (n == 0) {
        const struct dns_host *h = &dc->hosts[0];
        snprintf(set->why_empty, sizeof(set->why_empty), "cluster %s has no endpoint: %s %s%s", cl->name, h->ep->text,
                 h->error[0] ? "did not resolve: " : "has not been resolved yet", h->error[0] ? h->error : "");
    }
    if (dc->d->sink.fn != NULL)
        dc->d->sink.fn(dc->d->sink.ctx, dc->index, set);
    else
        for (size_t i = 0; i < dc->d->n_workers; i++)
            worker_publish(dc->d->workers[i], dc->index, set);
    cluster_set_unref(set);
}

static bool same_answer(const struct dns_host *h, const struct endpoint *eps, size_t n)
{
    if (n != h->n_last)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = eps[i].address.len == h->last[j].address.len &&
                    memcmp(&eps[i].address.ss, &h->last[j].address.ss, eps[i].address.len) == 0;
        if (!found)
            return false;
    }
    return true;
}

static void schedule(struct dns_host *h, uint64_t ms)
{
    ev_timer_stop(h->dc->d->loop, &h->refresh);
    ev_timer_set(&h->refresh, (double)ms / 1e3, 0.0);
    ev_timer_start(h->dc->d->loop, &h->refresh);
}

/* The first retry of a failing name waits this long, then twice as long
 * each time, up to the cluster's dns_refresh; each delay is jittered by
 * +-25% so that names failing together (a resolver down) spread out. */
#define RETRY_FIRST_MS 1000

static uint64_t jitter(struct dns *d, uint64_t ms)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return ms - ms / 4 + d->rng % (ms / 2 + 1);
}

/* When to look a failing name up again (exponential backoff with jitter). */
static uint64_t retry_delay(struct dns_host *h)
{
    uint64_t cap = h->dc->cfg->dns_refresh_ms;
    if (h->backoff_ms == 0)
        h->backoff_ms = RETRY_FIRST_MS;
    uint64_t base = h->backoff_ms < cap ? h->backoff_ms : cap;
    h->backoff_ms = base * 2;
    return jitter(h->dc->d, base);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct dns_host *h = arg;
    struct dns_cluster *dc = h->dc;
    h->in_flight = false;
    if (status == ARES_EDESTRUCTION || dc->d->stopping) {
        ares_freeaddrinfo(res);
        return;
    }
    uint64_t next = dc->cfg->dns_refresh_ms;
    size_t n = 0;
    struct endpoint *eps = NULL;
    if (status == ARES_SUCCESS && res != NULL) {
        for (struct ares_addrinfo_node *a = res->nodes; a != NULL; a = a->ai_next)
            n += a->ai_family == AF_INET || a->ai_family == AF_INET6;
        if (dc->cfg->discovery == DISCOVERY_LOGICAL_DNS && n > 1)
            n = 1; /* one address at a time: the name is behind its own balancer */
        eps = calloc(n ? n : 1, sizeof(*eps));
        size_t k = 0;
        for (struct ares_addrinfo_node *a = res->nodes; eps != NULL && a != NULL && k < n; a = a->ai_next) {
            if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
                continue;
            cluster_endpoint_fill(&eps[k++], a->ai_addr, a->ai_addrlen, h->ep->port, h->ep->host, h->ep->weight);
            if (a->ai_ttl > 0 && (uint64_t)a->ai_ttl * 1000 < next)
                next = (uint64_t)a->ai_ttl * 1000; /* the record says it changes sooner */
        }
        if (eps == NULL)
            status = ARES_ENOMEM;
    }
    ares_freeaddrinfo(res);
    stats_add(stats_block(stats_main_shard(), dc->cfg->stats), status != ARES_SUCCESS || n == 0 ? C_DNS_FAIL : C_DNS_OK,
              1);
    if (status != ARES_SUCCESS || n == 0) {
        snprintf(h->error, sizeof(h->error), "%s", status != ARES_SUCCESS ? ares_strerror(status) : "no address");
        if (!h->failing)
            log_warn("dns: cluster %s: %s: %s; %s", dc->cfg->name, h->ep->host, h->error,
                     h->resolved ? "keeping the last good addresses" : "no endpoint from it yet");
        h->failing = true;
        free(eps);
        if (!h->resolved)
            publish(dc); /* callers learn why there is no endpoint */
        schedule(h, retry_delay(h));
        return;
    }
    if (h->failing)
        log_info("dns: cluster %s: %s resolves again", dc->cfg->name, h->ep->host);
    h->failing = false;
    h->backoff_ms = 0;
    h->error[0] = '\0';
    bool changed = !h->resolved || !same_answer(h, eps, n);
    if (changed) {
        free(h->last);
        h->last = eps;
        h->n_last = n;
        h->resolved = true;
        char list[256] = "";
        for (size_t i = 0; i < n && strlen(list) < sizeof(list) - 80; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, eps[i].text);
        }
        log_info("dns: cluster %s: %s -> %s", dc->cfg->name, h->ep->host, list);
        publish(dc);
    } else {
        free(eps);
    }
    schedule(h, next);
}

/* Arms dc's timer for c-ares' next timeout, or stops it when no query is
 * out (call after anything that may start, answer or retry a query). */
static void arm_timeout(struct dns_cluster *dc)
{
    struct ev_loop *loop = dc->d->loop;
    ev_timer_stop(loop, &dc->timeout);
    struct timeval tv;
    if (dc->d->stopping || !dc->channel_ok || ares_timeout(dc->channel, NULL, &tv) == NULL)
        return;
    ev_timer_set(&dc->timeout, (double)tv.tv_sec + (double)tv.tv_usec / 1e6, 0.0);
    ev_timer_start(loop, &dc->timeout);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct dns_cluster *dc = container_of(t, struct dns_cluster, timeout);
    ares_process_fd(dc->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timeout(dc);
}

static void resolve(struct dns_host *h)
{
    if (h->in_flight || !h->dc->channel_ok)
        return;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_NOSORT;
    h->in_flight = true;
    ares_getaddrinfo(h->dc->channel, h->ep->host, NULL, &hints, on_answer, h);
    arm_timeout(h->dc);
}

static void on_refresh(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    resolve(container_of(t, struct dns_host, refresh));
}

static void on_sock(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct dns_sock *s = container_of(io, struct dns_sock, io);
    struct dns_cluster *dc = s->dc; /* s may be freed by sock_state during the call */
    ares_process_fd(dc->channel, (revents & EV_READ) ? s->fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? s->fd : ARES_SOCKET_BAD);
    arm_timeout(dc);
}

/* c-ares says which sockets it needs watched, and for what. */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_cluster *dc = data;
    struct dns_sock **pp = &dc->socks, *s;
    while ((s = *pp) != NULL && s->fd != fd)
        pp = &s->next;
    if (!readable && !writable) {
        if (s != NULL) {
            ev_io_stop(dc->d->loop, &s->io);
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return;
        s->dc = dc;
        s->fd = fd;
        s->next = dc->socks;
        dc->socks = s;
    } else {
        ev_io_stop(dc->d->loop, &s->io);
    }
    ev_io_init(&s->io, on_sock, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(dc->d->loop, &s->io);
}

static int open_channel(struct dns_cluster *dc)
{
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = sock_state;
    opts.sock_state_cb_data = dc;
    opts.timeout = 2000;
    opts.tries = 2;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    if (dc->cfg->n_dns_resolvers > 0) {
        opts.lookups = (char *)"b"; /* the configured servers only, not /etc/hosts */
        mask |= ARES_OPT_LOOKUPS;
    }
    int rc = ares_init_options(&dc->channel, &opts, mask);
    if (rc != ARES_SUCCESS) {
        log_error("dns: cluster %s: %s", dc->cfg->name, ares_strerror(rc));
        return GR_ERR_IO;
    }
    dc->channel_ok = true;
    if (dc->cfg->n_dns_resolvers > 0) {
        char csv[512] = "";
        for (size_t i = 0; i < dc->cfg->n_dns_resolvers && strlen(csv) < sizeof(csv) - 64; i++) {
            strcat(csv, i ? "," : "");
            strcat(csv, dc->cfg->dns_resolvers[i]);
        }
        rc = ares_set_servers_ports_csv(dc->channel, csv);
        if (rc != ARES_SUCCESS) {
            log_error("dns: cluster %s: dns_resolvers %s: %s", dc->cfg->name, csv, ares_strerror(rc));
            return GR_ERR_CONFIG;
        }
    }
    return GR_OK;
}

/* The answer prev had for host h (same cluster name, same name as
 * written), so that a reload keeps the last good addresses. */
static void carry_over(struct dns_host *h, const struct dns *prev)
{
    for (size_t i = 0; prev != NULL && i < prev->n_clusters; i++) {
        const struct dns_cluster *pc = &prev->clusters[i];
        if (strcmp(pc->cfg->name, h->dc->cfg->name) != 0)
            continue;
        for (size_t k = 0; k < pc->n_hosts; k++) {
            const struct dns_host *ph = &pc->hosts[k];
            if (!ph->resolved || strcmp(ph->ep->text, h->ep->text) != 0 ||
                (h->last = malloc(ph->n_last * sizeof(*h->last) + 1)) == NULL)
                continue;
            memcpy(h->last, ph->last, ph->n_last * sizeof(*h->last));
            for (size_t j = 0; j < ph->n_last; j++)
                h->last[j].address.text = h->last[j].text;
            h->n_last = ph->n_last;
            h->resolved = true;
            return;
        }
    }
}

static struct dns *start(const struct gr_config *cfg, struct worker **workers, size_t n_workers, struct ev_loop *loop,
                         const struct dns *prev, struct dns_sink sink)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_clusters; i++)
        n += cfg->clusters[i].discovery != DISCOVERY_STATIC;
    if (n == 0)
        return NULL;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return NULL;
    struct dns *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->sink = sink;
    d->rng = (uint64_t)(ev_now(loop) * 1e6) | 1;
    d->workers = workers;
    d->n_workers = n_workers;
    d->clusters = calloc(n, sizeof(*d->clusters));
    if (d->clusters == NULL) {
        free(d);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct gr_cluster_cfg *cl = &cfg->clusters[i];
        if (cl->discovery == DISCOVERY_STATIC)
            continue;
        struct dns_cluster *dc = &d->clusters[d->n_clusters++];
        dc->d = d;
        dc->cfg = cl;
        dc->index = cl->index;
        ev_timer_init(&dc->timeout, on_timeout, 0.0, 0.0);
        open_channel(dc);
        for (size_t e = 0; e < cl->n_endpoints; e++)
            dc->n_hosts += cl->endpoints[e].is_name;
        dc->hosts = calloc(dc->n_hosts ? dc->n_hosts : 1, sizeof(*dc->hosts));
        size_t k = 0;
        for (size_t e = 0; dc->hosts != NULL && e < cl->n_endpoints; e++) {
            if (!cl->endpoints[e].is_name)
                continue;
            struct dns_host *h = &dc->hosts[k++];
            h->dc = dc;
            h->ep = &cl->endpoints[e];
            ev_timer_init(&h->refresh, on_refresh, 0.0, 0.0);
            carry_over(h, prev);
            resolve(h);
        }
        if (dc->hosts == NULL)
            dc->n_hosts = 0;
        bool carried = false;
        for (size_t h = 0; h < dc->n_hosts; h++)
            carried |= dc->hosts[h].resolved;
        if (carried)
            publish(dc); /* a reload: the workers get the set at once, before any answer */
    }
    return d;
}

struct dns *dns_start(const struct gr_config *cfg, struct worker **workers, size_t n_workers, struct ev_loop *loop,
                      struct dns_sink sink)
{
    return start(cfg, workers, n_workers, loop, NULL, sink);
}

struct dns *dns_restart(struct dns *old, const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                        struct ev_loop *loop, struct dns_sink sink)
{
    struct dns *d = start(cfg, workers, n_workers, loop, old, sink);
    dns_stop(old);
    return d;
}

void dns_stop(struct dns *d)
{
    if (d == NULL)
        return;
    d->stopping = true;
    for (size_t i = 0; i < d->n_clusters; i++) {
        struct dns_cluster *dc = &d->clusters[i];
        ev_timer_stop(d->loop, &dc->timeout);
        for (size_t h = 0; h < dc->n_hosts; h++)
            ev_timer_stop(d->loop, &dc->hosts[h].refresh);
        if (dc->channel_ok)
            ares_destroy(dc->channel); /* answers in flight come back as ARES_EDESTRUCTION */
        while (dc->socks != NULL) {
            struct dns_sock *s = dc->socks;
            ev_io_stop(d->loop, &s->io);
            dc->socks = s->next;
            free(s);
        }
        for (size_t h = 0; h < dc->n_hosts; h++)
            free(dc->hosts[h].last);
        free(dc->hosts);
    }
    free(d->clusters);
    free(d);
    ares_library_cleanup();
}
