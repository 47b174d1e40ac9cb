/* The hashing policies (balancer.h, docs/affinity.md): ring_hash, a
 * consistent hash ring (Karger et al.; Envoy's ring_hash), and maglev
 * (Eisenbud et al., NSDI 2016). Both are built from the endpoints'
 * identities (address and host), never their indexes, in an order that
 * does not depend on the set's order: a set change moves only the keys of
 * the endpoints that changed (maglev: and a few more, see the doc). */
#include "grelay/balancer.h"
#include "grelay/common.h"

#include <stdlib.h>
#include <string.h>

#define GOLDEN 0x9e3779b97f4a7c15ull

static uint64_t load64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t balancer_hash64(const void *key, size_t len, uint64_t seed)
{
    const uint64_t m = 0xc6a4a7935bd1e995ull;
    const int r = 47;
    const unsigned char *p = key;
    uint64_t h = seed ^ (len * m);
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t k = load64(p + i);
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
    }
    const unsigned char *tail = p + (len & ~(size_t)7);
    size_t rest = len & 7;
    if (rest > 0) {
        for (size_t i = rest; i-- > 0;)
            h ^= (uint64_t)tail[i] << (8 * i);
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

/* MurmurHash3's finalizer: a bijection whose every output bit depends on
 * every input bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t balancer_endpoint_id(const char *address, const char *host)
{
    return balancer_hash64(address, strlen(address), balancer_hash64(host, strlen(host), GOLDEN));
}

/* Sorts n points by hash: a least-significant-digit radix sort (stable:
 * equal hashes stay in endpoint order) of 11-bit digits, 6 passes over tmp
 * (n points); qsort took 25 ms for the 51,200 points of 100 endpoints. */
static void sort_points(struct lb_ring_point *p, struct lb_ring_point *tmp, size_t n)
{
    enum { BITS = 11, DIGITS = 1 << BITS };
    for (unsigned shift = 0; shift < 64; shift += BITS) {
        uint32_t count[DIGITS + 1] = {0};
        for (size_t i = 0; i < n; i++)
            count[((p[i].hash >> shift) & (DIGITS - 1)) + 1]++;
        for (int d = 0; d < DIGITS; d++)
            count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++)
            tmp[count[(p[i].hash >> shift) & (DIGITS - 1)]++] = p[i];
        struct lb_ring_point *t = p;
        p = tmp;
        tmp = t;
    }
    /* 6 passes: the sorted points are back in the caller's p */
}

static int cmp_point(const void *a, const void *b)
{
    const struct lb_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->ep < y->ep ? -1 : x->ep > y->ep;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Endpoint i gets LB_RING_PER_WEIGHT points per unit of its weight (the
 * weights divided by their gcd), point k at mix64(id + (k + 1) * GOLDEN):
 * its points do not depend on the rest of the set, so an endpoint that
 * comes or goes moves exactly its own keys. Unless the gcd changes, or the
 * ring would pass LB_RING_MAX (then the points per weight scale down). */
static int build_ring(struct balancer *b)
{
    uint64_t g = 0, units = 0;
    for (size_t i = 0; i < b->n; i++)
        g = gcd(b->weight[i], g);
    for (size_t i = 0; i < b->n; i++)
        units += b->weight[i] / g;
    uint64_t per = LB_RING_PER_WEIGHT;
    if (per * units > LB_RING_MAX)
        per = LB_RING_MAX / units > 0 ? LB_RING_MAX / units : 1;
    size_t total = (size_t)(per * units);
    b->ring = malloc(total * sizeof(*b->ring));
    struct lb_ring_point *tmp = malloc(total * sizeof(*tmp));
    if (b->ring == NULL || tmp == NULL) {
        free(tmp);
        return GR_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        for (uint64_t j = 0; j < per * (b->weight[i] / g); j++)
            b->ring[k++] = (struct lb_ring_point){mix64(b->ids[i] + (j + 1) * GOLDEN), (uint32_t)i};
    /* points were written by endpoint index: equal hashes (never seen) would
     * order by index, which is the set's order; a tie costs one key at most */
    sort_points(b->ring, tmp, total);
    free(tmp);
    b->ring_n = total;
    return GR_OK;
}

/* Maglev's fill: endpoints take turns, in the order of their identities,
 * each claiming the next free slot of its own permutation of the table
 * (offset and skip from its identity). Weights: each turn an endpoint
 * gains its weight in credit and claims one slot per max-weight of credit,
 * so its entries are proportional to its weight. */
static int build_table(struct balancer *b)
{
    const uint32_t M = LB_MAGLEV_SIZE;
    struct lb_ring_point *order = malloc(b->n * sizeof(*order)); /* endpoints by identity (hash = id) */
    uint64_t *state = calloc(b->n * 4, sizeof(*state));          /* per endpoint: offset, skip, next, credit */
    b->table = malloc(M * sizeof(*b->table));
    if (order == NULL || state == NULL || b->table == NULL) {
        free(order);
        free(state);
        return GR_ERR_NOMEM;
    }
    uint32_t wmax = 1;
    for (size_t i = 0; i < b->n; i++) {
        order[i] = (struct lb_ring_point){b->ids[i], (uint32_t)i};
        wmax = b->weight[i] > wmax ? b->weight[i] : wmax;
        state[4 * i] = mix64(b->ids[i] ^ 0x5bd1e9955bd1e995ull) % M;
        state[4 * i + 1] = mix64(b->ids[i] + GOLDEN) % (M - 1) + 1;
    }
    qsort(order, b->n, sizeof(*order), cmp_point);
    memset(b->table, 0xff, M * sizeof(*b->table));
    for (uint32_t filled = 0; filled < M;) {
        for (size_t o = 0; o < b->n && filled < M; o++) {
            uint32_t e = order[o].ep;
            uint64_t *st = &state[4 * e];
            st[3] += b->weight[e];
            if (st[3] < wmax)
                continue;
            st[3] -= wmax;
            uint64_t c;
            do
                c = (st[0] + st[2]++ * st[1]) % M;
            while (b->table[c] != UINT32_MAX);
            b->table[c] = e;
            filled++;
        }
    }
    free(order);
    free(state);
    return GR_OK;
}

static bool same_build(const struct balancer *b, const uint64_t *ids, const struct balancer *old)
{
    if (old == NULL || old->kind != b->kind || old->n != b->n || old->ids == NULL ||
        (old->ring == NULL && old->table == NULL))
        return false;
    return memcmp(old->ids, ids, b->n * sizeof(*ids)) == 0 &&
           memcmp(old->weight, b->weight, b->n * sizeof(*b->weight)) == 0;
}

int balancer_hash_build(struct balancer *b, const uint64_t *ids, struct balancer *old)
{
    if (!balancer_hashing(b) || b->n == 0)
        return GR_OK;
    b->ids = malloc(b->n * sizeof(*b->ids));
    if (b->ids == NULL)
        return GR_ERR_NOMEM;
    memcpy(b->ids, ids, b->n * sizeof(*ids));
    if (same_build(b, ids, old)) {
        b->ring = old->ring;
        b->ring_n = old->ring_n;
        b->table = old->table;
        old->ring = NULL;
        old->ring_n = 0;
        old->table = NULL;
        return GR_OK;
    }
    return b->kind == LB_RING_HASH ? build_ring(b) : build_table(b);
}

/* The first point at or after key, wrapping around. */
static size_t ring_find(const struct balancer *b, uint64_t key)
{
    size_t lo = 0, hi = b->ring_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->ring[mid].hash < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == b->ring_n ? 0 : lo;
}

/* Whether any endpoint can be used (one bad() call each). */
static bool any_usable(const struct balancer *b, bool (*bad)(void *, size_t), void *ctx)
{
    for (size_t i = 0; i < b->n; i++)
        if (!bad(ctx, i))
            return true;
    return false;
}

static size_t ring_pick(const struct balancer *b, uint64_t key, bool (*bad)(void *, size_t), void *ctx)
{
    size_t at = ring_find(b, key);
    size_t first = b->ring[at].ep, last = SIZE_MAX, tried = 0;
    for (size_t k = 0; k < b->ring_n; k++) {
        size_t ep = b->ring[(at + k) % b->ring_n].ep;
        if (ep == last)
            continue; /* the same endpoint again: already found bad */
        if (!bad(ctx, ep))
            return ep;
        last = ep;
        /* A long walk: when nothing can be used (an outage), every point
         * would be asked; ask each endpoint once instead, and stop. */
        if (++tried == 2 * b->n + 16 && !any_usable(b, bad, ctx))
            break;
    }
    return first;
}

static size_t maglev_pick(const struct balancer *b, uint64_t key, bool (*bad)(void *, size_t), void *ctx)
{
    size_t first = b->table[key % LB_MAGLEV_SIZE];
    if (!bad(ctx, first))
        return first;
    for (uint64_t k = 1; k < 4 * (uint64_t)b->n + 32; k++) {
        size_t ep = b->table[mix64(key ^ (k * GOLDEN)) % LB_MAGLEV_SIZE];
        if (!bad(ctx, ep))
            return ep;
    }
    return first;
}

size_t balancer_hash_pick(const struct balancer *b, uint64_t key, bool (*bad)(void *ctx, size_t i), void *ctx)
{
    if (b->ring != NULL)
        return ring_pick(b, key, bad, ctx);
    if (b->table != NULL)
        return maglev_pick(b, key, bad, ctx);
    return 0;
}
