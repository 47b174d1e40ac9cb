/* Per-worker balancer state for one cluster: picks the endpoint of each stream.
 * Policies are a small table chosen by name from YAML; ring_hash and
 * maglev (balancer_hash.c) place each call by its key (docs/affinity.md). */
#ifndef GRELAY_BALANCER_H
#define GRELAY_BALANCER_H

#include "grelay/config.h"

#include <stddef.h>
#include <stdint.h>

struct balancer;

struct lb_policy {
    const char *name;                   /* as written in YAML */
    size_t (*pick)(struct balancer *b); /* index of the chosen endpoint (hashing policies: a call without key) */
};

/* A call's key for the hashing policies (affinity.h computes it). */
struct lb_key {
    bool has;      /* the call carries its key (header, authority or peer): false = no key, random pick */
    uint64_t hash; /* balancer_hash64 of the key's bytes */
};

/* One point of the ring (ring_hash): the endpoint owns the keys from the
 * previous point's hash (excluded) up to its own (included). */
struct lb_ring_point {
    uint64_t hash; /* place on the ring */
    uint32_t ep;   /* endpoint index */
};

#define LB_RING_PER_WEIGHT 512 /* ring_hash: points per unit of weight (weights divided by their gcd) */
#define LB_RING_MAX (1u << 16) /* ring_hash: points at most (1 MiB); past it the points per weight scale down */
#define LB_MAGLEV_SIZE 65537u  /* maglev: entries of the lookup table, a prime (Envoy's default) */

struct balancer {
    const struct lb_policy *policy; /* the cluster's lb_policy, from the table in balancer.c */
    enum lb_policy_kind kind;       /* which one it is */
    size_t n;                       /* endpoints */
    uint32_t *weight;               /* per endpoint, >= 1 */
    uint32_t *active;               /* streams in flight per endpoint (least_request) */
    int64_t *current;               /* smooth weighted round robin state */
    int64_t total;                  /* sum of weights */
    bool weighted;                  /* weights differ */
    size_t next;                    /* plain round robin cursor */
    uint64_t rng;                   /* xorshift state */
    uint64_t *ids;                  /* hashing policies: each endpoint's identity (address and host), or NULL */
    struct lb_ring_point *ring;     /* ring_hash: ring_n points sorted by hash; NULL otherwise */
    size_t ring_n;                  /* points on the ring */
    uint32_t *table;                /* maglev: LB_MAGLEV_SIZE endpoint indexes; NULL otherwise */
};

/* Sets up state for n endpoints; returns 0 or GR_ERR_NOMEM. The hashing
 * policies then need balancer_hash_build. */
int balancer_init(struct balancer *b, enum lb_policy_kind kind, const uint32_t *weights, size_t n, uint64_t seed);
void balancer_destroy(struct balancer *b);
static inline size_t balancer_pick(struct balancer *b) { return b->policy->pick(b); }
static inline void balancer_started(struct balancer *b, size_t i) { b->active[i]++; }
static inline void balancer_finished(struct balancer *b, size_t i) { b->active[i]--; }

/* balancer_hash.c */
/* A 64-bit non-cryptographic hash of len bytes (MurmurHash64A, bytes read
 * little-endian so every machine agrees). */
uint64_t balancer_hash64(const void *p, size_t len, uint64_t seed);
/* The identity of an endpoint: its address text and its host name. */
uint64_t balancer_endpoint_id(const char *address, const char *host);
static inline bool balancer_hashing(const struct balancer *b)
{
    return b->kind == LB_RING_HASH || b->kind == LB_MAGLEV;
}
/* Builds b's ring or table from ids (b->n identities, copied), or takes
 * old's when old is the same policy over the same identities and weights
 * (a health change, a reload). Nothing for other policies. GR_OK or
 * GR_ERR_NOMEM. */
int balancer_hash_build(struct balancer *b, const uint64_t *ids, struct balancer *old);
/* The endpoint for key: its place on the ring (or in the table), walking
 * on to the next distinct endpoint on the ring (maglev: re-probing with the
 * key salted) while bad(ctx, i) says endpoint i cannot be used. If the
 * walk finds none, the key's first choice. */
size_t balancer_hash_pick(const struct balancer *b, uint64_t key, bool (*bad)(void *ctx, size_t i), void *ctx);

#endif
