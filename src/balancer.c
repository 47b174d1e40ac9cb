/* Load balancing policies: round robin (smooth weighted when weights differ),
 * least request (power of two choices, weighted), random (weighted); the
 * hashing ones (ring_hash, maglev) are in balancer_hash.c and pick at
 * random (weighted) for calls without a key. */
#include "grelay/balancer.h"
#include "grelay/common.h"

#include <stdlib.h>

static uint64_t next_rand(struct balancer *b)
{
    uint64_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

/* Uniform in [0, n) without modulo bias worth caring about for small n. */
static size_t rand_below(struct balancer *b, uint64_t n) { return (size_t)((next_rand(b) >> 11) % n); }

static size_t pick_round_robin(struct balancer *b)
{
    if (!b->weighted) {
        size_t i = b->next;
        b->next = (i + 1) % b->n;
        return i;
    }
    /* Smooth weighted round robin: every endpoint gains its weight, the
     * richest is picked and pays the total. Spreads picks evenly in time. */
    size_t best = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->current[i] += b->weight[i];
        if (b->current[i] > b->current[best])
            best = i;
    }
    b->current[best] -= b->total;
    return best;
}

static size_t pick_random(struct balancer *b)
{
    if (!b->weighted)
        return rand_below(b, b->n);
    uint64_t r = rand_below(b, (uint64_t)b->total);
    for (size_t i = 0; i < b->n; i++) {
        if (r < b->weight[i])
            return i;
        r -= b->weight[i];
    }
    return b->n - 1;
}

static size_t pick_least_request(struct balancer *b)
{
    if (b->n == 1)
        return 0;
    size_t x = rand_below(b, b->n);
    size_t y = rand_below(b, b->n - 1);
    if (y >= x)
        y++;
    /* Fewer active streams per unit of weight wins: a_x/w_x <= a_y/w_y. */
    uint64_t lx = (uint64_t)b->active[x] * b->weight[y];
    uint64_t ly = (uint64_t)b->active[y] * b->weight[x];
    return lx <= ly ? x : y;
}

static const struct lb_policy policies[] = {
    [LB_ROUND_ROBIN] = {"round_robin", pick_round_robin},
    [LB_LEAST_REQUEST] = {"least_request", pick_least_request},
    [LB_RANDOM] = {"random", pick_random},
    [LB_RING_HASH] = {"ring_hash", pick_random},
    [LB_MAGLEV] = {"maglev", pick_random},
};

int balancer_init(struct balancer *b, enum lb_policy_kind kind, const uint32_t *weights, size_t n, uint64_t seed)
{
    b->policy = &policies[kind];
    b->kind = kind;
    b->ids = NULL;
    b->ring = NULL;
    b->ring_n = 0;
    b->table = NULL;
    b->n = n;
    b->weight = calloc(n ? n : 1, sizeof(*b->weight));
    b->active = calloc(n ? n : 1, sizeof(*b->active));
    b->current = calloc(n ? n : 1, sizeof(*b->current));
    if (b->weight == NULL || b->active == NULL || b->current == NULL) {
        balancer_destroy(b);
        return GR_ERR_NOMEM;
    }
    b->total = 0;
    b->weighted = false;
    for (size_t i = 0; i < n; i++) {
        b->weight[i] = weights[i] ? weights[i] : 1;
        b->total += b->weight[i];
        if (b->weight[i] != b->weight[0])
            b->weighted = true;
    }
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    /* Start plain round robin at a seed-dependent place, so workers do not march in step. */
    b->next = n ? (size_t)(b->rng % n) : 0;
    return GR_OK;
}

void balancer_destroy(struct balancer *b)
{
    free(b->weight);
    free(b->active);
    free(b->current);
    free(b->ids);
    free(b->ring);
    free(b->table);
    b->ids = NULL;
    b->ring = NULL;
    b->table = NULL;
    b->weight = NULL;
    b->active = NULL;
    b->current = NULL;
}
