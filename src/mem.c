/* Size-class free lists behind nghttp2_mem. Every block has a 16-byte
 * header holding its class (or MEM_CLASSES for a plain malloc'd block) and
 * its usable size, so free and realloc need no lookup.
 *
 * A block on a free list is linked through the first word after its
 * header. Under AddressSanitizer the whole block, header and link
 * included, is poisoned while it waits there (review F14): a use after
 * nghttp2 freed it, or a second free, is reported. The list's own reads
 * unpoison the block first; its size is known from the list's class. */
#include "grelay/mem.h"
#include "grelay/common.h"

#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16
#define MAX_FREE_PER_CLASS 4096

struct hdr {
    uint32_t cls; /* size class, or MEM_CLASSES */
    uint32_t pad; /* unused: keeps size at offset 8 and the header 16 bytes */
    size_t size;  /* usable bytes */
};

static size_t class_size(unsigned c) { return mem_class_size(c); }

/* Frees a block taken off a free list of class c. */
static void release(struct mem_pool *p, struct hdr *h, unsigned c)
{
    p->bytes -= HDR + class_size(c);
    free(h);
}

/* Takes the first block off free list c (which is not empty). */
static struct hdr *pop_free(struct mem_pool *p, unsigned c)
{
    struct hdr *h = p->free[c];
    GR_UNPOISON(h, HDR + class_size(c));
    p->free[c] = *(void **)((char *)h + HDR);
    p->n_free[c]--;
    return h;
}

static void *pool_malloc(size_t size, void *ud)
{
    struct mem_pool *p = ud;
    unsigned c = mem_class(size);
    struct hdr *h;
    if (c < MEM_CLASSES && p->free[c] != NULL) {
        h = pop_free(p, c);
    } else {
        size_t usable = c < MEM_CLASSES ? class_size(c) : size;
        h = malloc(HDR + usable);
        if (h == NULL)
            return NULL;
        p->bytes += HDR + usable;
        h->cls = c;
        h->size = usable;
    }
    return (char *)h + HDR;
}

static void pool_free(void *ptr, void *ud)
{
    if (ptr == NULL)
        return;
    struct mem_pool *p = ud;
    struct hdr *h = (struct hdr *)((char *)ptr - HDR);
    unsigned c = h->cls;
    if (c >= MEM_CLASSES || p->n_free[c] >= MAX_FREE_PER_CLASS) {
        p->bytes -= HDR + h->size;
        free(h);
        return;
    }
    *(void **)ptr = p->free[c];
    p->free[c] = h;
    p->n_free[c]++;
    GR_POISON(h, HDR + class_size(c));
}

static void *pool_calloc(size_t n, size_t size, void *ud)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *ptr = pool_malloc(n * size, ud);
    if (ptr != NULL)
        memset(ptr, 0, n * size);
    return ptr;
}

static void *pool_realloc(void *ptr, size_t size, void *ud)
{
    if (ptr == NULL)
        return pool_malloc(size, ud);
    struct hdr *h = (struct hdr *)((char *)ptr - HDR);
    if (size <= h->size)
        return ptr;
    void *np = pool_malloc(size, ud);
    if (np == NULL)
        return NULL;
    memcpy(np, ptr, h->size);
    pool_free(ptr, ud);
    return np;
}

void mem_pool_init(struct mem_pool *p)
{
    memset(p, 0, sizeof(*p));
    p->mem.mem_user_data = p;
    p->mem.malloc = pool_malloc;
    p->mem.free = pool_free;
    p->mem.calloc = pool_calloc;
    p->mem.realloc = pool_realloc;
}

void mem_pool_trim(struct mem_pool *p, uint32_t keep)
{
    for (unsigned c = 0; c < MEM_CLASSES; c++)
        while (p->n_free[c] > keep)
            release(p, pop_free(p, c), c);
}

void mem_pool_destroy(struct mem_pool *p)
{
    for (unsigned c = 0; c < MEM_CLASSES; c++)
        while (p->free[c] != NULL)
            release(p, pop_free(p, c), c);
}

/* ---- OpenSSL's allocations, counted. ---- */

/* Bytes OpenSSL holds (headers included), process-wide. */
static atomic_uint_least64_t openssl_bytes;

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    size_t *h = malloc(HDR + n);
    if (h == NULL)
        return NULL;
    *h = n;
    atomic_fetch_add_explicit(&openssl_bytes, HDR + n, memory_order_relaxed);
    return (char *)h + HDR;
}

static void ossl_free(void *ptr, const char *file, int line)
{
    (void)file;
    (void)line;
    if (ptr == NULL)
        return;
    size_t *h = (size_t *)(void *)((char *)ptr - HDR);
    atomic_fetch_sub_explicit(&openssl_bytes, HDR + *h, memory_order_relaxed);
    free(h);
}

static void *ossl_realloc(void *ptr, size_t n, const char *file, int line)
{
    if (ptr == NULL)
        return ossl_malloc(n, file, line);
    if (n == 0) { /* CRYPTO_realloc's contract: free, return NULL */
        ossl_free(ptr, file, line);
        return NULL;
    }
    size_t *h = (size_t *)(void *)((char *)ptr - HDR);
    size_t old = *h;
    size_t *nh = realloc(h, HDR + n);
    if (nh == NULL)
        return NULL;
    *nh = n;
    atomic_fetch_add_explicit(&openssl_bytes, n, memory_order_relaxed);
    atomic_fetch_sub_explicit(&openssl_bytes, old, memory_order_relaxed);
    return (char *)nh + HDR;
}

bool mem_count_openssl(void) { return CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1; }

uint64_t mem_openssl_bytes(void) { return atomic_load_explicit(&openssl_bytes, memory_order_relaxed); }
