/* What one copy of a DATA payload into a call's queue costs, as grelay
 * makes it (docs/performance.md, "What the copies into the queues cost"):
 * the bytes arrive by recv() into one read buffer (so they are in cache, as
 * after a real read), then memcpy() into a 16 KiB chunk taken in turn from
 * a ring of as many chunks as calls in flight (64 at 64x1: the chunks wait
 * in their queues until the other side's write takes them, so a chunk is
 * cold when its turn comes again). A writer thread keeps the socket full.
 * Only the memcpy is timed, each on its own (CLOCK_MONOTONIC, whose own
 * cost is measured and subtracted); prints the median and the 90th
 * percentile in ns, and the cost of the recv() that brought the bytes for
 * comparison.
 *   copy_cost [SIZE [RING [N]]]   16384 bytes, 64 chunks, 200000 copies by default */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
static size_t size;

static void *writer(void *arg)
{
    (void)arg;
    char *b = malloc(size);
    memset(b, 'x', size);
    for (;;) {
        size_t off = 0;
        while (off < size) {
            ssize_t n = write(fds[1], b + off, size - off);
            if (n <= 0)
                return NULL;
            off += (size_t)n;
        }
    }
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *v, size_t n, uint64_t overhead)
{
    qsort(v, n, sizeof(*v), cmp);
    uint64_t p50 = v[n / 2], p90 = v[n * 9 / 10];
    printf("%s: median %llu ns, p90 %llu ns\n", what, (unsigned long long)(p50 > overhead ? p50 - overhead : 0),
           (unsigned long long)(p90 > overhead ? p90 - overhead : 0));
}

int main(int argc, char **argv)
{
    size = argc > 1 ? strtoul(argv[1], NULL, 10) : 16384;
    size_t ring = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
    size_t n = argc > 3 ? strtoul(argv[3], NULL, 10) : 200000;
    if (size == 0 || ring == 0 || n < 10 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return 2;
    char *rbuf = malloc(32 * 1024 > size ? 32 * 1024 : size);
    char **chunks = malloc(ring * sizeof(*chunks));
    uint64_t *copy = malloc(n * sizeof(*copy)), *rd = malloc(n * sizeof(*rd)), *clk = malloc(n * sizeof(*clk));
    for (size_t i = 0; i < ring; i++)
        chunks[i] = malloc(size), memset(chunks[i], 0, size);
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        size_t got = 0;
        while (got < size) {
            ssize_t r = recv(fds[0], rbuf + got, size - got, 0);
            if (r <= 0)
                return 1;
            got += (size_t)r;
        }
        uint64_t t1 = now_ns();
        memcpy(chunks[i % ring], rbuf, size);
        uint64_t t2 = now_ns();
        clk[i] = now_ns() - t2; /* an empty interval: the clock's own cost */
        rd[i] = t1 - t0;
        copy[i] = t2 - t1;
    }
    qsort(clk, n, sizeof(*clk), cmp);
    uint64_t overhead = clk[n / 2];
    printf("%zu bytes, a ring of %zu chunks, %zu copies; clock_gettime %llu ns (subtracted)\n", size, ring, n,
           (unsigned long long)overhead);
    report("memcpy into the call's chunk", copy, n, overhead);
    report("recv() that brought the bytes", rd, n, overhead);
    return 0;
}
