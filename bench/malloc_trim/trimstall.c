// trimstall.c - does malloc_trim(0) on a quiet thread stall malloc/free on a busy thread?
// gcc -O2 -pthread -o trimstall trimstall.c
//
// Thread B (busy): random free+malloc churn, sizes log-uniform 32 B..16 KiB, 4096 live slots,
//   each new block fully memset. Times each free+malloc pair ("pair") and pair+memset ("full").
//   Per-100ms-window histograms -> p50/p99/p99.9/max. Logs every sample >= OUTLIER_NS.
// Thread Q (quiet): builds a fragmented heap of "sessions" (25 KiB-ish buffer + 2 small objs),
//   frees all but every Nth session, then every INTERVAL ms: re-churns a fraction of the freed
//   space (allocate, touch, free; realistic "a few calls came in") and then performs the
//   release operation of the chosen mode, timed:
//     trim     : malloc_trim(0)
//     none     : nothing (baseline)
//     pool     : session buffers come from a private mmap pool; release = madvise(MADV_DONTNEED)
//                on runs of freed slots (no malloc locks)
//     poolfree : same, MADV_FREE
//     mmapthr  : mallopt(M_MMAP_THRESHOLD, 20 KiB) so every 25 KiB buffer is its own mmap,
//                free() munmaps it immediately; release = nothing
//     trimthr  : mallopt(M_TRIM_THRESHOLD, 64 KiB); release = nothing (shows top-only trimming)
//     predv    : buffers stay in malloc, but before free() Q madvise(MADV_DONTNEED)s the buffer's interior
//                whole pages itself (no malloc lock); release = nothing
// Options: -q (B idle, for cross-process control), -p bcpu,qcpu, -b B slots, -s MB, -k N, -r frac
// Every loop is bounded by time or count.
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NB 1024
#define MAXWIN 400
#define OUTLIER_NS 10000
#define MAXOUT 200000
#define MAXOPS 200
#define B_SLOTS_MAX 65536
static int B_SLOTS = 4096;

static const char *mode = "trim";
static int total_mb = 400, keep_every = 8, duration_ms = 10000, interval_ms = 500, pin = 1;
static double rechurn_frac = 0.25;
static int b_idle = 0, bcpu = 0, qcpu = 1;
static long pagesz;

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long sz = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &sz, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (pagesz / 1024);
}
static inline uint64_t xr(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

// ---- log-linear histogram (16 sub-buckets per power of two, ~6%) ----
static inline int bidx(uint64_t v)
{
    if (v < 16)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int i = (e - 3) * 16 + (int)((v >> (e - 4)) & 15);
    return i < NB ? i : NB - 1;
}
static inline uint64_t bupper(int i)
{
    if (i < 16)
        return i;
    int e = i / 16 + 3, sub = i % 16;
    return ((uint64_t)(16 + sub + 1) << (e - 4)) - 1;
}
static uint64_t pct(const uint32_t *h, uint64_t n, double p)
{
    uint64_t target = (uint64_t)(p * n), c = 0;
    if (target >= n)
        target = n - 1;
    for (int i = 0; i < NB; i++) {
        c += h[i];
        if (c > target)
            return bupper(i);
    }
    return 0;
}

typedef struct {
    uint64_t t0, n, p50, p99, p999, max, fp999, fmax, max_np;
} win_t;
static win_t wins[MAXWIN];
static int nwin;
typedef struct {
    uint64_t t;
    uint32_t pair, full;
    uint16_t dv, div;
} outl_t;
static outl_t outl[MAXOUT];
static int nout;
typedef struct {
    uint64_t t0, t1, cpu;
    long rss0, rss1;
    uint64_t churn_ns;
} op_t;
static op_t ops[MAXOPS];
static int nops;

static pthread_barrier_t bar;
static atomic_int stop_flag;
static uint64_t t_start;
static long rss_base, rss_built, rss_freed, rss_end;
static uint64_t build_ns, free_ns;

static void pin_to(int cpu)
{
    if (!pin)
        return;
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

// Identify the arena of a malloc'd (non-mmapped) chunk. glibc 2.36 x86-64: size field at p-8,
// bit 2 = NON_MAIN_ARENA, bit 1 = IS_MMAPPED; non-main heaps are aligned to HEAP_MAX_SIZE=64 MiB
// and start with heap_info whose first field is the arena pointer.
static const char *arena_of(void *p, char *buf)
{
    size_t sz = ((size_t *)p)[-1];
    if (sz & 2) {
        strcpy(buf, "mmapped");
        return buf;
    }
    if (!(sz & 4)) {
        strcpy(buf, "main_arena");
        return buf;
    }
    void *ar = *(void **)((uintptr_t)p & ~((uintptr_t)64 * 1024 * 1024 - 1));
    snprintf(buf, 64, "arena@%p", ar);
    return buf;
}

// ---------------- Thread B ----------------
static void *busy(void *arg)
{
    (void)arg;
    pin_to(bcpu);
    if (b_idle) {
        pthread_barrier_wait(&bar);
        uint64_t e = t_start + (uint64_t)duration_ms * 1000000ull;
        while (now_ns() < e)
            usleep(10000);
        atomic_store(&stop_flag, 1);
        return NULL;
    }
    static void *slot[B_SLOTS_MAX];
    static uint32_t hp[NB], hf[NB];
    uint64_t rs = 0x9E3779B97F4A7C15ull;
// log-uniform size in [32, 16384]: 2^(5 + 9*u)
#define BSIZE() ((size_t)(32.0 * __builtin_exp2(9.0 * (double)(xr(&rs) >> 11) / 9007199254740992.0)))
    for (int i = 0; i < B_SLOTS; i++) {
        size_t s = BSIZE();
        slot[i] = malloc(s);
        memset(slot[i], 1, s);
    }
    char ab[64];
    fprintf(stderr, "B arena: %s\n", arena_of(slot[0], ab));
    // warm up 200 ms
    uint64_t wend = now_ns() + 200000000ull;
    while (now_ns() < wend)
        for (int k = 0; k < 1000; k++) {
            int i = xr(&rs) % B_SLOTS;
            size_t s = BSIZE();
            free(slot[i]);
            slot[i] = malloc(s);
            memset(slot[i], 2, s);
        }
    pthread_barrier_wait(&bar);
    while (now_ns() < t_start) {
        int i = xr(&rs) % B_SLOTS;
        size_t s = BSIZE();
        free(slot[i]);
        slot[i] = malloc(s);
        memset(slot[i], 2, s);
    }
    uint64_t tend = t_start + (uint64_t)duration_ms * 1000000ull;
    uint64_t wstart = t_start, wnext = t_start + 100000000ull, n = 0, mx = 0, fmx = 0, mxnp = 0;
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    long lv = ru.ru_nvcsw, liv = ru.ru_nivcsw;
    memset(hp, 0, sizeof hp);
    memset(hf, 0, sizeof hf);
    for (;;) {
        int i = xr(&rs) % B_SLOTS;
        size_t s = BSIZE();
        uint64_t t0 = now_ns();
        free(slot[i]);
        void *p = malloc(s);
        uint64_t t1 = now_ns();
        memset(p, 3, s);
        uint64_t t2 = now_ns();
        slot[i] = p;
        uint64_t d = t1 - t0, fd = t2 - t0;
        hp[bidx(d)]++;
        hf[bidx(fd)]++;
        n++;
        if (d > mx)
            mx = d;
        if (fd > fmx)
            fmx = fd;
        if (fd >= OUTLIER_NS) {
            // attribute: did this thread get context-switched in the last <=1024 ops?
            getrusage(RUSAGE_THREAD, &ru);
            long dv = ru.ru_nvcsw - lv, div = ru.ru_nivcsw - liv;
            lv = ru.ru_nvcsw;
            liv = ru.ru_nivcsw;
            if (div == 0 && dv == 0 && d > mxnp)
                mxnp = d;
            if (nout < MAXOUT) {
                outl_t *o = &outl[nout++];
                o->t = t0;
                o->pair = d > 0xffffffffu ? 0xffffffffu : d;
                o->full = fd > 0xffffffffu ? 0xffffffffu : fd;
                o->dv = dv > 65535 ? 65535 : dv;
                o->div = div > 65535 ? 65535 : div;
            }
        } else {
            if (d > mxnp)
                mxnp = d;
            if ((n & 1023) == 0) {
                getrusage(RUSAGE_THREAD, &ru);
                lv = ru.ru_nvcsw;
                liv = ru.ru_nivcsw;
            }
        }
        if (t2 >= wnext) {
            if (nwin < MAXWIN) {
                win_t *w = &wins[nwin++];
                w->t0 = wstart;
                w->n = n;
                w->max = mx;
                w->fmax = fmx;
                w->p50 = pct(hp, n, 0.50);
                w->p99 = pct(hp, n, 0.99);
                w->p999 = pct(hp, n, 0.999);
                w->fp999 = pct(hf, n, 0.999);
                w->max_np = mxnp;
            }
            memset(hp, 0, sizeof hp);
            memset(hf, 0, sizeof hf);
            n = mx = fmx = mxnp = 0;
            wstart = wnext;
            wnext += 100000000ull;
            if (wstart >= tend)
                break;
        }
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < B_SLOTS; i++)
        free(slot[i]);
    return NULL;
}

// ---------------- Thread Q ----------------
typedef struct {
    void *buf, *s1, *s2;
    int slot;
    size_t bs;
} sess_t;
static int predv;
static char *pool;
static unsigned char *pstate;
static int pslots;
static const size_t PSLOT = 28672;
static int pool_top;
static int *pfree;
static int npfree;
enum { P_USED = 1, P_DIRTY = 2, P_CLEAN = 3 };
static int use_pool;

static void *qbuf_alloc(size_t s, int *slot)
{
    if (!use_pool) {
        *slot = -1;
        return malloc(s);
    }
    int k = npfree ? pfree[--npfree] : (pool_top < pslots ? pool_top++ : -1);
    if (k < 0) {
        *slot = -1;
        return malloc(s);
    }
    pstate[k] = P_USED;
    *slot = k;
    return pool + (size_t)k * PSLOT;
}
static void qbuf_free(void *p, int slot)
{
    if (slot < 0) {
        free(p);
        return;
    }
    pstate[slot] = P_DIRTY;
    pfree[npfree++] = slot;
}
static void pool_release(int advice)
{
    int i = 0;
    while (i < pool_top) {
        if (pstate[i] != P_DIRTY) {
            i++;
            continue;
        }
        int j = i;
        while (j < pool_top && pstate[j] == P_DIRTY)
            pstate[j++] = P_CLEAN;
        madvise(pool + (size_t)i * PSLOT, (size_t)(j - i) * PSLOT, advice);
        i = j;
    }
}
static void sess_new(sess_t *s, uint64_t *rs)
{
    s->s1 = malloc(64 + xr(rs) % 192);
    size_t bs = 24576 + xr(rs) % 2048;
    s->buf = qbuf_alloc(bs, &s->slot);
    s->bs = bs;
    memset(s->buf, 5, bs);
    size_t s2 = 256 + xr(rs) % 768;
    s->s2 = malloc(s2);
    memset(s->s2, 6, s2);
}
static void sess_free(sess_t *s)
{
    free(s->s1);
    if (predv && s->slot < 0) {
        // give the block's whole interior pages back before free(): glibc only writes the chunk header
        // (just before buf) and fd/bk/fd_nextsize/bk_nextsize in the first 32 bytes of buf; skip the first 64 B.
        uintptr_t a = ((uintptr_t)s->buf + 64 + pagesz - 1) & ~(uintptr_t)(pagesz - 1);
        uintptr_t e = ((uintptr_t)s->buf + s->bs) & ~(uintptr_t)(pagesz - 1);
        if (e > a)
            madvise((void *)a, e - a, MADV_DONTNEED);
    }
    qbuf_free(s->buf, s->slot);
    free(s->s2);
    s->buf = NULL;
}

static void *quiet(void *arg)
{
    (void)arg;
    pin_to(qcpu);
    uint64_t rs = 0x123456789ull;
    int nsess = (int)((long)total_mb * 1024 / 25);
    int nfreed = nsess - (nsess + keep_every - 1) / keep_every;
    int nre = (int)(nfreed * rechurn_frac);
    sess_t *S = calloc(nsess, sizeof *S), *R = calloc(nre > 0 ? nre : 1, sizeof *R);
    use_pool = !strcmp(mode, "pool") || !strcmp(mode, "poolfree");
    predv = !strcmp(mode, "predv");
    if (use_pool) {
        pslots = nsess + nre + 16;
        pool = mmap(NULL, (size_t)pslots * PSLOT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                    -1, 0);
        pstate = calloc(pslots, 1);
        pfree = calloc(pslots, sizeof(int));
    }
    rss_base = rss_kb();
    uint64_t t0 = now_ns();
    for (int i = 0; i < nsess; i++)
        sess_new(&S[i], &rs);
    build_ns = now_ns() - t0;
    char ab[64];
    fprintf(stderr, "Q arena: small objs %s, big buf %s\n", arena_of(S[0].s1, ab),
            use_pool ? "private pool" : (arena_of(S[0].buf, ab + 32), ab + 32));
    rss_built = rss_kb();
    t0 = now_ns();
    for (int i = 0; i < nsess; i++)
        if (i % keep_every)
            sess_free(&S[i]);
    free_ns = now_ns() - t0;
    rss_freed = rss_kb();

    int do_trim = !strcmp(mode, "trim");
    int adv = !strcmp(mode, "poolfree") ? MADV_FREE : MADV_DONTNEED;
    t_start = now_ns() + 20000000ull; // common start 20 ms after barrier
    pthread_barrier_wait(&bar);
    uint64_t tend = t_start + (uint64_t)duration_ms * 1000000ull;
    for (int k = 0; nops < MAXOPS; k++) {
        uint64_t tick = t_start + 1000000000ull + (uint64_t)k * interval_ms * 1000000ull;
        if (tick + 200000000ull > tend)
            break;
        // re-churn 100 ms before the tick (a few calls on the quiet worker)
        uint64_t pre = tick - 100000000ull;
        while (now_ns() < pre && !atomic_load(&stop_flag))
            usleep(1000);
        uint64_t c0 = now_ns();
        for (int i = 0; i < nre; i++)
            sess_new(&R[i], &rs);
        for (int i = 0; i < nre; i++)
            sess_free(&R[i]);
        uint64_t cns = now_ns() - c0;
        while (now_ns() < tick && !atomic_load(&stop_flag))
            usleep(200);
        op_t *o = &ops[nops++];
        o->churn_ns = cns;
        o->rss0 = rss_kb();
        struct timespec c0s, c1s;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0s);
        o->t0 = now_ns();
        if (do_trim)
            malloc_trim(0);
        else if (use_pool)
            pool_release(adv);
        o->t1 = now_ns();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1s);
        o->cpu = (c1s.tv_sec - c0s.tv_sec) * 1000000000ll + (c1s.tv_nsec - c0s.tv_nsec);
        o->rss1 = rss_kb();
    }
    while (!atomic_load(&stop_flag) && now_ns() < tend + 2000000000ull)
        usleep(1000);
    rss_end = rss_kb();
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static uint64_t med(const uint64_t *v0, int n)
{
    static uint64_t v[MAXWIN > MAXOPS ? MAXWIN : MAXOPS];
    if (!n)
        return 0;
    memcpy(v, v0, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_u64);
    return v[n / 2];
}
static uint64_t vmax(uint64_t *v, int n)
{
    uint64_t m = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

int main(int argc, char **argv)
{
    pagesz = sysconf(_SC_PAGESIZE);
    const char *csv = NULL, *tag = "";
    int c;
    while ((c = getopt(argc, argv, "m:s:k:d:i:r:c:t:b:Pqp:")) != -1)
        switch (c) {
        case 'b':
            B_SLOTS = atoi(optarg);
            if (B_SLOTS < 16)
                B_SLOTS = 16;
            if (B_SLOTS > B_SLOTS_MAX)
                B_SLOTS = B_SLOTS_MAX;
            break;
        case 'm': mode = optarg; break;
        case 's': total_mb = atoi(optarg); break;
        case 'k': keep_every = atoi(optarg); break;
        case 'd': duration_ms = atoi(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'r': rechurn_frac = atof(optarg); break;
        case 'c': csv = optarg; break;
        case 't': tag = optarg; break;
        case 'P': pin = 0; break;
        case 'q': b_idle = 1; break;
        case 'p':
            if (sscanf(optarg, "%d,%d", &bcpu, &qcpu) != 2)
                return 2;
            break;
        default:
            fprintf(stderr,
                    "usage: %s -m trim|none|pool|poolfree|mmapthr|trimthr [-s MB] [-k N] [-d ms] [-i ms] [-r frac] [-c "
                    "csv] [-t tag] [-P]\n",
                    argv[0]);
            return 2;
        }
    if (duration_ms > 30000)
        duration_ms = 30000;
    if (!strcmp(mode, "mmapthr"))
        mallopt(M_MMAP_THRESHOLD, 20 * 1024);
    if (!strcmp(mode, "trimthr"))
        mallopt(M_TRIM_THRESHOLD, 64 * 1024);
    void *mp = malloc(100);
    char ab[64];
    fprintf(stderr, "main arena check: %s\n", arena_of(mp, ab));
    free(mp);
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t tb, tq;
    pthread_create(&tq, NULL, quiet, NULL);
    pthread_create(&tb, NULL, busy, NULL);
    pthread_join(tb, NULL);
    pthread_join(tq, NULL);

    // arena count via malloc_info
    int narena = 0;
    {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        malloc_info(0, f);
        fclose(f);
        for (char *p = buf; (p = strstr(p, "<heap nr=")); p++)
            narena++;
        free(buf);
    }

    // classify windows: "op window" = overlaps a Q release op (for no-op modes: contains the tick)
    static uint64_t mx_op[MAXWIN], mx_no[MAXWIN], np_op[MAXWIN], np_no[MAXWIN], p9_op[MAXWIN], p9_no[MAXWIN];
    int a = 0, b = 0;
    for (int w = 0; w < nwin; w++) {
        uint64_t ws = wins[w].t0, we = ws + 100000000ull;
        int hit = 0;
        for (int k = 0; k < nops; k++)
            if (ops[k].t0 < we && ops[k].t1 >= ws)
                hit = 1;
        if (hit) {
            mx_op[a] = wins[w].max;
            np_op[a] = wins[w].max_np;
            p9_op[a++] = wins[w].p999;
        } else {
            mx_no[b] = wins[w].max;
            np_no[b] = wins[w].max_np;
            p9_no[b++] = wins[w].p999;
        }
    }
    // B's worst pair latency overlapping each release op: any / not context-switched / blocked (voluntary switch)
    static uint64_t opd[MAXOPS], opc[MAXOPS], bany[MAXOPS], bnp[MAXOPS], bblk[MAXOPS], churn[MAXOPS];
    int n100 = 0, n100np = 0, n100blk = 0;
    for (int k = 0; k < nops; k++) {
        opd[k] = ops[k].t1 - ops[k].t0;
        opc[k] = ops[k].cpu;
        churn[k] = ops[k].churn_ns;
        bany[k] = bnp[k] = bblk[k] = 0;
        for (int j = 0; j < nout; j++) {
            uint64_t d = outl[j].pair;
            if (outl[j].t <= ops[k].t1 && outl[j].t + d >= ops[k].t0) {
                if (d > bany[k])
                    bany[k] = d;
                if (!outl[j].div && !outl[j].dv && d > bnp[k])
                    bnp[k] = d;
                if (!outl[j].div && outl[j].dv && d > bblk[k])
                    bblk[k] = d;
            }
        }
    }
    for (int j = 0; j < nout; j++)
        if (outl[j].pair >= 100000) {
            n100++;
            if (!outl[j].div && !outl[j].dv)
                n100np++;
            if (!outl[j].div && outl[j].dv)
                n100blk++;
        }
    uint64_t first_op = nops ? opd[0] : 0, first_cpu = nops ? opc[0] : 0;
    uint64_t f_any = nops ? bany[0] : 0, f_np = nops ? bnp[0] : 0, f_blk = nops ? bblk[0] : 0;
    long rss_pre_last = nops ? ops[nops - 1].rss0 : 0, rss_post_last = nops ? ops[nops - 1].rss1 : 0;
    long rss_first_after = nops ? ops[0].rss1 : 0;
    const char *am = getenv("MALLOC_ARENA_MAX");
    if (!am)
        am = getenv("GLIBC_TUNABLES");
    uint64_t tot_ops = 0;
    for (int w = 0; w < nwin; w++)
        tot_ops += wins[w].n;
    printf("RESULT tag=%s mode=%s arena_max=%s narenas=%d windows=%d/%d Bops/s=%.2fM t_start_ns=%llu\n", tag, mode,
           am ? am : "default", narena, a, b, tot_ops / (duration_ms / 1000.0) / 1e6, (unsigned long long)t_start);
    printf("  Bwin_max_us      op-windows med=%.1f max=%.1f | other med=%.1f max=%.1f\n", med(mx_op, a) / 1e3,
           vmax(mx_op, a) / 1e3, med(mx_no, b) / 1e3, vmax(mx_no, b) / 1e3);
    printf(
        "  Bwin_max_np_us   op-windows med=%.1f max=%.1f | other med=%.1f max=%.1f   (samples not context-switched)\n",
        med(np_op, a) / 1e3, vmax(np_op, a) / 1e3, med(np_no, b) / 1e3, vmax(np_no, b) / 1e3);
    printf("  Bwin_p999_us     op-windows med=%.2f max=%.2f | other med=%.2f max=%.2f\n", med(p9_op, a) / 1e3,
           vmax(p9_op, a) / 1e3, med(p9_no, b) / 1e3, vmax(p9_no, b) / 1e3);
    printf("  Qop_ms           n=%d first=%.2f (cpu %.2f) med=%.2f max=%.2f ; Qchurn_ms med=%.1f\n", nops,
           first_op / 1e6, first_cpu / 1e6, med(opd, nops) / 1e6, vmax(opd, nops) / 1e6, med(churn, nops) / 1e6);
    printf("  B_during_op_us   first: any=%.1f np=%.1f blocked=%.1f | all ops: any med=%.1f max=%.1f np med=%.1f "
           "max=%.1f blocked max=%.1f\n",
           f_any / 1e3, f_np / 1e3, f_blk / 1e3, med(bany, nops) / 1e3, vmax(bany, nops) / 1e3, med(bnp, nops) / 1e3,
           vmax(bnp, nops) / 1e3, vmax(bblk, nops) / 1e3);
    printf("  B>=100us         total=%d not-switched=%d blocked=%d\n", n100, n100np, n100blk);
    printf("  RSS_MB           base=%.0f built=%.0f after_free=%.0f after_first_op=%.0f before_last_op=%.0f "
           "after_last_op=%.0f end=%.0f ; Qbuild_ms=%.0f Qfree_ms=%.1f\n",
           rss_base / 1024.0, rss_built / 1024.0, rss_freed / 1024.0, rss_first_after / 1024.0, rss_pre_last / 1024.0,
           rss_post_last / 1024.0, rss_end / 1024.0, build_ns / 1e6, free_ns / 1e6);
    if (csv) {
        FILE *f = fopen(csv, "w");
        if (f) {
            fprintf(f, "kind,t_ms,n,p50_ns,p99_ns,p999_ns,max_ns,max_np_ns,full_p999_ns,full_max_ns\n");
            for (int w = 0; w < nwin; w++)
                fprintf(f, "win,%.1f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu\n", (wins[w].t0 - t_start) / 1e6,
                        (unsigned long long)wins[w].n, (unsigned long long)wins[w].p50, (unsigned long long)wins[w].p99,
                        (unsigned long long)wins[w].p999, (unsigned long long)wins[w].max,
                        (unsigned long long)wins[w].max_np, (unsigned long long)wins[w].fp999,
                        (unsigned long long)wins[w].fmax);
            fprintf(f, "kind,t_ms,dur_ns,cpu_ns,rss_before_kb,rss_after_kb,churn_ns,B_any_ns,B_np_ns,B_blocked_ns\n");
            for (int k = 0; k < nops; k++)
                fprintf(f, "op,%.1f,%llu,%llu,%ld,%ld,%llu,%llu,%llu,%llu\n", (ops[k].t0 - t_start) / 1e6,
                        (unsigned long long)opd[k], (unsigned long long)opc[k], ops[k].rss0, ops[k].rss1,
                        (unsigned long long)churn[k], (unsigned long long)bany[k], (unsigned long long)bnp[k],
                        (unsigned long long)bblk[k]);
            fprintf(f, "kind,t_ms,pair_ns,full_ns,nvcsw,nivcsw\n");
            for (int j = 0; j < nout; j++)
                fprintf(f, "out,%.3f,%u,%u,%u,%u\n", (outl[j].t - t_start) / 1e6, outl[j].pair, outl[j].full,
                        outl[j].dv, outl[j].div);
            fclose(f);
        }
    }
    return 0;
}
