/* DNS discovery (c-ares on the main thread's libev loop): resolves the host
 * names of strict_dns and logical_dns clusters, re-resolves them every
 * dns_refresh (or sooner, at a shorter record TTL), and publishes each
 * changed endpoint set to every worker. A failed lookup keeps the last good
 * answer. Never runs on a worker, never calls getaddrinfo. */
#ifndef GRELAY_DNS_H
#define GRELAY_DNS_H

#include "grelay/config.h"

#include <ev.h>

struct dns;
struct worker;
struct endpoint_set;

/* Where changed endpoint sets go (the health checker, health_publish,
 * which marks them and hands them to every worker): fn(ctx, cluster
 * slot, set). With fn NULL, straight to each worker. */
struct dns_sink {
    void (*fn)(void *ctx, size_t cluster, struct endpoint_set *set); /* takes its own references */
    void *ctx;                                                       /* fn's first argument */
};

/* Starts resolving (the first lookups go out at once). NULL when no
 * cluster uses DNS, or on failure (logged). */
struct dns *dns_start(const struct gr_config *cfg, struct worker **workers, size_t n_workers, struct ev_loop *loop,
                      struct dns_sink sink);
/* A reload: resolves cfg's clusters from now on and stops old. A name
 * that old had resolved (same cluster, same name) keeps its last answer,
 * so a failing lookup right after a reload keeps the endpoints. */
struct dns *dns_restart(struct dns *old, const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                        struct ev_loop *loop, struct dns_sink sink);
void dns_stop(struct dns *d);

#endif
