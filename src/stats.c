/* Metrics (stats.h): the registry of keys, the shards, and the per-call
 * lookup of a (route, method) series. Rendering is in stats_render.c. */
#include "grelay/stats.h"
#include "grelay/common.h"
#include "grelay/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define KEY_HASH 8192        /* chains of the key registry */
#define MAX_SHARDS 260       /* workers (at most 256) and the main thread */
#define MAIN_SHARD_ID 100000 /* the main thread's shard id (logs only) */

/* A method the registry admitted: "service/method" (without the leading
 * slash) and the split point. */
struct method {
    uint32_t hash;
    uint32_t svc_len; /* bytes of the service; the method follows the '/' */
    size_t len;       /* bytes of text */
    char text[];      /* "pkg.Service/Method" */
};

/* The registry: written under mu, read without it (ids below n are
 * complete: n is stored with release after the key). */
static struct {
    pthread_mutex_t mu;
    struct stats_key *keys[STATS_MAX_KEYS]; /* by id */
    _Atomic uint32_t n;                     /* keys interned */
    struct stats_key *hash[KEY_HASH];       /* chains by label hash */
    struct stats_key *overflow[SK_KINDS];   /* per kind: the "other" key once the registry is full */
    _Atomic(struct method *) *methods;      /* open addressing, lock-free reads; NULL: free slot */
    size_t methods_cap;                     /* slots of methods (a power of two) */
    uint32_t n_methods;                     /* methods admitted */
    uint32_t max_methods;                   /* gr_stats_cfg.max_methods at start */
    _Atomic bool methods_full;              /* n_methods reached max_methods */
    struct stats_shard *shards[MAX_SHARDS]; /* every shard made */
    _Atomic size_t n_shards;
    struct stats_shard *main_shard;
    double buckets[GR_STATS_MAX_BUCKETS]; /* upper bounds, seconds */
    uint64_t bounds_us[GR_STATS_MAX_BUCKETS];
    size_t n_buckets;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

_Atomic uint64_t stats_reloads[2];
double stats_start_time;

/* One entry of a shard's (route, path) -> block table. */
struct call_entry {
    const struct stats_key *route; /* NULL: free */
    uint32_t hash;
    uint32_t len; /* bytes of path; 0: the route's "other" series */
    char *path;   /* a copy */
    uint64_t *block;
};

struct stats_calls {
    struct call_entry *e; /* open addressing */
    size_t cap;           /* a power of two */
    size_t n;             /* entries used */
};

static uint32_t hash_bytes(uint32_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u; /* FNV-1a */
    return h;
}

static uint32_t hash_labels(enum stats_kind kind, const char *const *labels, size_t n)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (size_t i = 0; i < n; i++)
        h = hash_bytes(h, labels[i], strlen(labels[i]) + 1);
    return h;
}

static const size_t n_labels[SK_KINDS] = {
    [SK_LISTENER] = 1, [SK_ROUTE] = 3, [SK_CALL] = 5, [SK_ENDPOINT] = 2, [SK_CLUSTER] = 1};

size_t stats_slots(enum stats_kind kind)
{
    switch (kind) {
    case SK_LISTENER: return L_SLOTS;
    case SK_ROUTE: return R_SLOTS;
    case SK_CALL: return stats_call_sum_slot(reg.n_buckets) + 1;
    case SK_ENDPOINT: return E_SLOTS;
    case SK_CLUSTER:
    case SK_KINDS: break;
    }
    return C_SLOTS;
}

/* A new key (under mu); NULL when the registry is full or memory ran out. */
static struct stats_key *add_key(enum stats_kind kind, const char *const *labels, uint32_t h)
{
    uint32_t id = atomic_load_explicit(&reg.n, memory_order_relaxed);
    if (id >= STATS_MAX_KEYS - SK_KINDS) /* the last ids are the overflow keys' */
        return NULL;
    struct stats_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->id = id;
    k->kind = kind;
    for (size_t i = 0; i < n_labels[kind]; i++) {
        k->labels[i] = strdup(labels[i]);
        if (k->labels[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free((void *)k->labels[j]);
            free(k);
            return NULL;
        }
    }
    k->next = reg.hash[h % KEY_HASH];
    reg.hash[h % KEY_HASH] = k;
    reg.keys[id] = k;
    atomic_store_explicit(&reg.n, id + 1, memory_order_release);
    return k;
}

static const struct stats_key *find_key(enum stats_kind kind, const char *const *labels, uint32_t h)
{
    for (struct stats_key *k = reg.hash[h % KEY_HASH]; k != NULL; k = k->next) {
        if (k->kind != kind)
            continue;
        size_t i = 0;
        while (i < n_labels[kind] && strcmp(k->labels[i], labels[i]) == 0)
            i++;
        if (i == n_labels[kind])
            return k;
    }
    return NULL;
}

/* The key of kind with labels, made if new; the kind's "other" key when
 * the registry is full. Takes mu. */
static const struct stats_key *intern(enum stats_kind kind, const char *const *labels)
{
    uint32_t h = hash_labels(kind, labels, n_labels[kind]);
    pthread_mutex_lock(&reg.mu);
    const struct stats_key *k = find_key(kind, labels, h);
    if (k == NULL)
        k = add_key(kind, labels, h);
    if (k == NULL) {
        if (reg.overflow[kind] == NULL)
            log_warn("metrics: %d series keys reached; new series count as \"other\"", STATS_MAX_KEYS);
        k = reg.overflow[kind];
    }
    pthread_mutex_unlock(&reg.mu);
    return k;
}

/* Keeps the last ids for one "other" key per kind, so a full registry
 * still counts everything. */
static int make_overflow_keys(void)
{
    static const char *const other[5] = {"other", "other", "other", "other", "other"};
    for (int kind = 0; kind < SK_KINDS; kind++) {
        struct stats_key *k = calloc(1, sizeof(*k));
        if (k == NULL)
            return GR_ERR_NOMEM;
        k->id = STATS_MAX_KEYS - SK_KINDS + (uint32_t)kind;
        k->kind = (enum stats_kind)kind;
        for (size_t i = 0; i < n_labels[kind]; i++)
            k->labels[i] = other[i];
        reg.overflow[kind] = k;
    }
    return GR_OK;
}

int stats_init(const struct gr_config *cfg)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    stats_start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    reg.n_buckets = cfg->stats.n_buckets;
    for (size_t i = 0; i < reg.n_buckets; i++) {
        reg.buckets[i] = cfg->stats.buckets[i];
        reg.bounds_us[i] = (uint64_t)(cfg->stats.buckets[i] * 1e6);
    }
    reg.max_methods = cfg->stats.max_methods;
    size_t cap = 64;
    while (cap < 2 * (size_t)reg.max_methods + 16)
        cap *= 2;
    reg.methods = calloc(cap, sizeof(*reg.methods));
    reg.methods_cap = cap;
    atomic_store(&reg.methods_full, reg.max_methods == 0);
    if (reg.methods == NULL || make_overflow_keys() != GR_OK)
        return GR_ERR_NOMEM;
    reg.main_shard = stats_shard_new(MAIN_SHARD_ID);
    return reg.main_shard != NULL ? GR_OK : GR_ERR_NOMEM;
}

void stats_bind(struct gr_config *cfg)
{
    for (size_t i = 0; i < cfg->n_clusters; i++)
        cfg->clusters[i].stats = stats_cluster_key(cfg->clusters[i].name);
    if (cfg->stats.max_methods != reg.max_methods || cfg->stats.n_buckets != reg.n_buckets ||
        memcmp(cfg->stats.buckets, reg.buckets, reg.n_buckets * sizeof(double)) != 0)
        log_warn("metrics: stats.max_methods and stats.buckets take effect at the next start, not at a reload");
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct gr_listener_cfg *l = &cfg->listeners[i];
        const char *ll[1] = {l->name};
        struct stats_key *lk = (struct stats_key *)intern(SK_LISTENER, ll);
        const char *none[3] = {l->name, "none", "none"};
        const struct stats_key *nk = intern(SK_ROUTE, none);
        if (lk != NULL && lk->none == NULL)
            lk->none = nk; /* written once, before any worker reads it (stats_bind runs first) */
        l->stats = lk;
        for (size_t v = 0; v < l->n_vhosts; v++)
            for (size_t r = 0; r < l->vhosts[v].n_routes; r++) {
                struct gr_route_cfg *rt = &l->vhosts[v].routes[r];
                const char *rl[3] = {l->name, rt->name, rt->cluster_name};
                rt->stats = intern(SK_ROUTE, rl);
            }
    }
}

const struct stats_key *stats_endpoint_key(const char *cluster, const char *endpoint)
{
    const char *labels[2] = {cluster, endpoint};
    return intern(SK_ENDPOINT, labels);
}

const struct stats_key *stats_cluster_key(const char *cluster)
{
    const char *labels[1] = {cluster};
    return intern(SK_CLUSTER, labels);
}

const struct stats_key *stats_no_route_key(const struct gr_listener_cfg *l)
{
    return l->stats != NULL ? l->stats->none : NULL;
}

struct stats_shard *stats_shard_new(uint32_t id)
{
    struct stats_shard *sh = calloc(1, sizeof(*sh));
    struct stats_calls *c = calloc(1, sizeof(*c));
    if (sh == NULL || c == NULL) {
        free(sh);
        free(c);
        return NULL;
    }
    sh->calls = c;
    sh->id = id;
    pthread_mutex_lock(&reg.mu);
    size_t n = atomic_load(&reg.n_shards);
    if (n < MAX_SHARDS) {
        reg.shards[n] = sh;
        atomic_store_explicit(&reg.n_shards, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&reg.mu);
    return sh;
}

struct stats_shard *stats_main_shard(void) { return reg.main_shard; }

/* Shards stay readable until exit: the main thread may render while a
 * worker stops, so freeing one only drops its call table. */
void stats_shard_free(struct stats_shard *sh)
{
    if (sh == NULL || sh->calls == NULL)
        return;
    for (size_t i = 0; i < sh->calls->cap; i++)
        free(sh->calls->e[i].path);
    free(sh->calls->e);
    free(sh->calls);
    sh->calls = NULL;
}

uint64_t *stats_block_slow(struct stats_shard *sh, const struct stats_key *k)
{
    uint64_t *b = calloc(stats_slots(k->kind), sizeof(uint64_t));
    if (b != NULL)
        __atomic_store_n(&sh->blocks[k->id], b, __ATOMIC_RELEASE);
    return b;
}

/* ---- methods ---- */

static const struct method *method_find(const char *text, size_t len, uint32_t h)
{
    if (reg.methods == NULL)
        return NULL; /* stats_init has not run (a unit test): every method is "other" */
    size_t mask = reg.methods_cap - 1;
    for (size_t i = h & mask, probes = 0; probes < reg.methods_cap; i = (i + 1) & mask, probes++) {
        const struct method *m = atomic_load_explicit(&reg.methods[i], memory_order_acquire);
        if (m == NULL)
            return NULL;
        if (m->hash == h && m->len == len && memcmp(m->text, text, len) == 0)
            return m;
    }
    return NULL;
}

/* Admits a method (under mu) unless max_methods are in; NULL then. */
static const struct method *method_add(const char *text, size_t len, uint32_t svc_len, uint32_t h)
{
    const struct method *m = method_find(text, len, h);
    if (m != NULL || atomic_load(&reg.methods_full) || reg.methods == NULL)
        return m;
    struct method *nm = malloc(sizeof(*nm) + len + 1);
    if (nm == NULL)
        return NULL;
    nm->hash = h;
    nm->svc_len = svc_len;
    nm->len = len;
    memcpy(nm->text, text, len);
    nm->text[len] = '\0';
    size_t mask = reg.methods_cap - 1, i = h & mask;
    while (atomic_load_explicit(&reg.methods[i], memory_order_relaxed) != NULL)
        i = (i + 1) & mask;
    atomic_store_explicit(&reg.methods[i], nm, memory_order_release);
    if (++reg.n_methods >= reg.max_methods) {
        atomic_store(&reg.methods_full, true);
        log_warn("metrics: %u methods seen (stats.max_methods); new ones count as grpc_method=\"other\"",
                 reg.max_methods);
    }
    return nm;
}

/* "/pkg.Service/Method" (no query, no further '/'): the service's length,
 * or 0 when path is not a gRPC method path. */
static uint32_t split_path(const uint8_t *path, size_t len)
{
    if (len < 4 || path[0] != '/' || len > 1024)
        return 0;
    size_t slash = 0;
    for (size_t i = 1; i < len; i++) {
        if (path[i] == '?' || path[i] < 0x21 || path[i] > 0x7e)
            return 0;
        if (path[i] == '/') {
            if (slash != 0)
                return 0;
            slash = i;
        }
    }
    return slash > 1 && slash < len - 1 ? (uint32_t)(slash - 1) : 0;
}

/* ---- a shard's (route, path) table ---- */

static struct call_entry *calls_slot(struct stats_calls *c, const struct stats_key *route, const uint8_t *path,
                                     size_t len, uint32_t h)
{
    size_t mask = c->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct call_entry *e = &c->e[i];
        if (e->route == NULL || (e->route == route && e->hash == h && e->len == len && memcmp(e->path, path, len) == 0))
            return e;
    }
}

static bool calls_grow(struct stats_calls *c)
{
    size_t cap = c->cap ? c->cap * 2 : 64;
    struct call_entry *e = calloc(cap, sizeof(*e));
    if (e == NULL)
        return false;
    struct stats_calls next = {.e = e, .cap = cap, .n = c->n};
    for (size_t i = 0; i < c->cap; i++)
        if (c->e[i].route != NULL)
            *calls_slot(&next, c->e[i].route, (const uint8_t *)c->e[i].path, c->e[i].len, c->e[i].hash) = c->e[i];
    free(c->e);
    *c = next;
    return true;
}

/* The block of (route, service, method): interned, then remembered under
 * path (len 0: the route's "other" series). */
static uint64_t *call_block(struct stats_shard *sh, const struct stats_key *route, const uint8_t *path, size_t len,
                            uint32_t h, const struct method *m)
{
    struct stats_calls *c = sh->calls;
    if (c == NULL || ((c->n + 1) * 2 > c->cap && !calls_grow(c)))
        return NULL;
    char svc[1024], meth[1024];
    const char *labels[5] = {route->labels[0], route->labels[1], route->labels[2], "other", "other"};
    if (m != NULL) {
        memcpy(svc, m->text, m->svc_len);
        svc[m->svc_len] = '\0';
        memcpy(meth, m->text + m->svc_len + 1, m->len - m->svc_len - 1);
        meth[m->len - m->svc_len - 1] = '\0';
        labels[3] = svc;
        labels[4] = meth;
    }
    const struct stats_key *k = intern(SK_CALL, labels);
    uint64_t *b = k != NULL ? stats_block(sh, k) : NULL;
    char *copy = malloc(len + 1);
    if (b == NULL || copy == NULL) {
        free(copy);
        return b;
    }
    memcpy(copy, path, len);
    struct call_entry *e = calls_slot(c, route, path, len, h);
    *e = (struct call_entry){.route = route, .hash = h, .len = (uint32_t)len, .path = copy, .block = b};
    c->n++;
    return b;
}

/* The series of a call: known (route, path) pairs without a lock; a new
 * one is admitted as a method when its path is a gRPC method path, the
 * call found a route and the backend knew the method (not UNIMPLEMENTED:
 * a scan of random paths admits nothing), while max_methods allows. */
static uint64_t *find_call(struct stats_shard *sh, const struct stats_key *route, const uint8_t *path, size_t len,
                           int code)
{
    struct stats_calls *c = sh->calls;
    uint32_t h = hash_bytes(2166136261u, path, len);
    if (c != NULL && c->cap > 0) {
        struct call_entry *e = calls_slot(c, route, path, len, h);
        if (e->route != NULL)
            return e->block;
    }
    uint32_t svc_len = split_path(path, len);
    bool routed = strcmp(route->labels[1], "none") != 0 || strcmp(route->labels[2], "none") != 0;
    const struct method *m = NULL;
    if (svc_len != 0) {
        uint32_t mh = hash_bytes(2166136261u, path + 1, len - 1);
        m = method_find((const char *)path + 1, len - 1, mh);
        if (m == NULL && routed && code != 12 /* UNIMPLEMENTED */ && !atomic_load(&reg.methods_full)) {
            pthread_mutex_lock(&reg.mu);
            m = method_add((const char *)path + 1, len - 1, svc_len, mh);
            pthread_mutex_unlock(&reg.mu);
        }
    }
    if (m != NULL)
        return call_block(sh, route, path, len, h, m);
    /* "other": one entry per route, under the empty path. */
    uint32_t oh = hash_bytes(2166136261u, "", 0);
    if (c != NULL && c->cap > 0) {
        struct call_entry *e = calls_slot(c, route, (const uint8_t *)"", 0, oh);
        if (e->route != NULL)
            return e->block;
    }
    return call_block(sh, route, (const uint8_t *)"", 0, oh, NULL);
}

void stats_call_done(struct stats_shard *sh, const struct stats_key *route, const uint8_t *path, size_t path_len,
                     int code, uint64_t duration_us)
{
    if (sh == NULL || route == NULL)
        return;
    uint64_t *b = find_call(sh, route, path != NULL ? path : (const uint8_t *)"", path != NULL ? path_len : 0, code);
    if (b == NULL)
        return;
    stats_add(b, (unsigned)(code >= 0 && code < STATS_CODES ? code : 2 /* UNKNOWN */), 1);
    size_t i = 0;
    while (i < reg.n_buckets && duration_us > reg.bounds_us[i])
        i++;
    stats_add(b, (unsigned)(STATS_CALL_BUCKETS + i), 1);
    stats_add(b, (unsigned)stats_call_sum_slot(reg.n_buckets), duration_us);
}

void stats_reload_result(bool ok) { atomic_fetch_add(&stats_reloads[ok ? 1 : 0], 1); }

/* ---- reading (main thread) ---- */

uint32_t stats_key_count(void) { return atomic_load_explicit(&reg.n, memory_order_acquire); }

const struct stats_key *stats_key_at(uint32_t id)
{
    if (id >= STATS_MAX_KEYS - SK_KINDS)
        return reg.overflow[id - (STATS_MAX_KEYS - SK_KINDS)];
    return id < stats_key_count() ? reg.keys[id] : NULL;
}

struct stats_shard *const *stats_shards(size_t *n)
{
    *n = atomic_load_explicit(&reg.n_shards, memory_order_acquire);
    return reg.shards;
}

const double *stats_buckets(size_t *n)
{
    *n = reg.n_buckets;
    return reg.buckets;
}

void stats_sum_key(const struct stats_key *k, uint64_t *out, size_t n)
{
    memset(out, 0, n * sizeof(*out));
    size_t ns;
    struct stats_shard *const *sh = stats_shards(&ns);
    for (size_t s = 0; s < ns; s++) {
        const uint64_t *b = __atomic_load_n(&sh[s]->blocks[k->id], __ATOMIC_ACQUIRE);
        if (b == NULL)
            continue;
        for (size_t i = 0; i < n; i++) {
            uint64_t v = __atomic_load_n(&b[i], __ATOMIC_RELAXED);
            if (k->kind == SK_ENDPOINT &&
                (i == E_EJECTED_UNTIL || i == E_WEIGHT || i == E_OUTLIER_UNTIL || i == E_OUTLIER_CODE))
                out[i] = v > out[i] ? v : out[i]; /* the latest ejection of any worker */
            else
                out[i] += v;
        }
    }
}

bool stats_sum(enum stats_kind kind, const char *const *labels, uint64_t *out, size_t n)
{
    uint32_t h = hash_labels(kind, labels, n_labels[kind]);
    pthread_mutex_lock(&reg.mu);
    const struct stats_key *k = find_key(kind, labels, h);
    pthread_mutex_unlock(&reg.mu);
    if (k == NULL)
        return false;
    stats_sum_key(k, out, n);
    return true;
}
