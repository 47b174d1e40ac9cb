/* Per-worker balancer state for one cluster: picks the endpoint of each stream.
 * Policies are a small table chosen by name from YAML. */
#ifndef GRELAY_BALANCER_H
#define GRELAY_BALANCER_H

#include "grelay/config.h"

#include <stddef.h>
#include <stdint.h>

struct balancer;

struct lb_policy {
    const char *name;                   /* as written in YAML */
    size_t (*pick)(struct balancer *b); /* index of the chosen endpoint */
};

struct balancer {
    const struct lb_policy *policy; /* the cluster's lb_policy, from the table in balancer.c */
    size_t n;                       /* endpoints */
    uint32_t *weight;               /* per endpoint, >= 1 */
    uint32_t *active;               /* streams in flight per endpoint (least_request) */
    int64_t *current;               /* smooth weighted round robin state */
    int64_t total;                  /* sum of weights */
    bool weighted;                  /* weights differ */
    size_t next;                    /* plain round robin cursor */
    uint64_t rng;                   /* xorshift state */
};

/* Sets up state for n endpoints; returns 0 or GR_ERR_NOMEM. */
int balancer_init(struct balancer *b, enum lb_policy_kind kind, const uint32_t *weights, size_t n, uint64_t seed);
void balancer_destroy(struct balancer *b);
static inline size_t balancer_pick(struct balancer *b) { return b->policy->pick(b); }
static inline void balancer_started(struct balancer *b, size_t i) { b->active[i]++; }
static inline void balancer_finished(struct balancer *b, size_t i) { b->active[i]--; }

#endif
