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

/* Starts resolving (the first lookups go out at once). NULL when no
 * cluster uses DNS, or on failure (logged). */
struct dns *dns_start(const struct gr_config *cfg, struct worker **workers, size_t n_workers, struct ev_loop *loop);
/* A reload: resolves cfg's clusters from now on and stops old. A name
 * that old had resolved (same cluster, same name) keeps its last answer,
 * so a failing lookup right after a reload keeps the endpoints. */
struct dns *dns_restart(struct dns *old, const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                        struct ev_loop *loop);
void dns_stop(struct dns *d);

#endif
