/* Active health checks (the main thread's loop): every endpoint of a
 * cluster with a health_check gets grpc.health.v1.Health/Check each
 * interval (+-10%), one check in flight at a time, over the cluster's
 * transport (h2c, or TLS with its verification). Its verdicts mark the
 * endpoint sets the workers get (endpoint.unhealthy), so that their
 * balancers skip unhealthy endpoints between events, as they adopt DNS
 * answers. DNS hands its sets here (health_publish) rather than to the
 * workers. See docs/health.md. */
#ifndef GRELAY_HEALTH_H
#define GRELAY_HEALTH_H

#include "grelay/cluster.h"
#include "grelay/config.h"
#include "grelay/health_probe.h"

#include <ev.h>

struct health;
struct worker;

/* Why an endpoint is unhealthy, from its last failure and the failed
 * checks in a row ("NOT_SERVING from grpc.health.v1 (3 checks)"). */
void health_why(char *buf, size_t len, unsigned result, uint64_t fails);

/* Starts checking cfg's clusters (the static endpoints at once; DNS ones
 * as health_publish hands their sets). NULL when out of memory. */
struct health *health_start(const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                            struct ev_loop *loop);
/* A reload: checks cfg's clusters from now on; an endpoint that stays in a
 * cluster of the same name keeps its verdict and counts. old is stopped. */
struct health *health_restart(struct health *old, const struct gr_config *cfg, struct worker **workers,
                              size_t n_workers, struct ev_loop *loop);
void health_stop(struct health *h);
/* A new endpoint set of cluster slot i (DNS): its endpoints are checked
 * (new ones start healthy, see docs/health.md), and every worker gets it
 * marked with their health. h is a struct health * (dns.h's sink). */
void health_publish(void *h, size_t i, struct endpoint_set *set);

#endif
