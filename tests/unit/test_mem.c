/* nghttp2's allocator: size classes, reuse, realloc, trimming, and under
 * AddressSanitizer the poisoning of blocks on the free lists (review F14). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/mem.h"

#include <openssl/crypto.h>
#include <string.h>

static void *m_alloc(struct mem_pool *p, size_t n) { return p->mem.malloc(n, p->mem.mem_user_data); }
static void m_free(struct mem_pool *p, void *ptr) { p->mem.free(ptr, p->mem.mem_user_data); }

/* Every size up to 4096 gets the smallest class that holds it, and wastes
 * at most 15 bytes or a fifth of the block (issue 16: nghttp2's per-call
 * objects, 152 and 224 bytes in 1.52, took 256-byte blocks before). */
static void classes_fit_sizes(void **state)
{
    (void)state;
    for (size_t n = 1; n <= 4096; n++) {
        unsigned c = mem_class(n);
        assert_true(c < MEM_CLASSES);
        size_t cs = mem_class_size(c);
        assert_true(cs >= n);
        assert_true(c == 0 || mem_class_size(c - 1) < n); /* the smallest that holds it */
        assert_true(cs - n <= 15 || (cs - n) * 5 <= cs);
        assert_int_equal(mem_class(cs), c);
    }
    assert_int_equal(mem_class(0), 0);
    assert_int_equal(mem_class(4097), MEM_CLASSES);
    assert_int_equal(mem_class_size(MEM_CLASSES - 1), 4096);
    assert_int_equal(mem_class_size(mem_class(152)), 160);
    assert_int_equal(mem_class_size(mem_class(224)), 224);
}

static void blocks_are_reused_by_class(void **state)
{
    (void)state;
    struct mem_pool p;
    mem_pool_init(&p);
    unsigned c100 = mem_class(100);
    assert_int_equal(mem_class_size(c100), 112);
    char *a = m_alloc(&p, 100); /* the 112-byte class */
    assert_non_null(a);
    memset(a, 1, 112);
    m_free(&p, a);
    assert_int_equal(p.n_free[c100], 1);
    assert_ptr_equal(m_alloc(&p, 97), a); /* same class: the same block */
    assert_int_equal(p.n_free[c100], 0);
    memset(a, 2, 112);
    char *big = m_alloc(&p, 10000); /* past the classes: plain malloc */
    assert_non_null(big);
    m_free(&p, big);
    for (unsigned c = 0; c < MEM_CLASSES; c++)
        assert_int_equal(p.n_free[c], 0);
    char *z = p.mem.calloc(4, 8, p.mem.mem_user_data);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(z[i], 0);
    char *r = p.mem.realloc(a, 110, p.mem.mem_user_data); /* fits: unchanged */
    assert_ptr_equal(r, a);
    r = p.mem.realloc(a, 300, p.mem.mem_user_data); /* the 320 class; the old block is freed */
    assert_ptr_not_equal(r, a);
    assert_int_equal(r[111], 2);
    assert_int_equal(p.n_free[c100], 1);
    m_free(&p, r);
    m_free(&p, z);
    mem_pool_trim(&p, 0);
    for (unsigned c = 0; c < MEM_CLASSES; c++)
        assert_int_equal(p.n_free[c], 0);
    mem_pool_destroy(&p);
}

static void free_blocks_are_poisoned(void **state)
{
    (void)state;
    struct mem_pool p;
    mem_pool_init(&p);
    unsigned c = mem_class(200);
    char *a = m_alloc(&p, 200); /* the 208-byte class */
    char *b = m_alloc(&p, 200);
    m_free(&p, a);
    m_free(&p, b); /* b's link word points at a */
    assert_int_equal(p.n_free[c], 2);
#if defined(GR_ASAN)
    assert_true(__asan_address_is_poisoned(a - 16)); /* the header */
    assert_true(__asan_address_is_poisoned(a));      /* the link word */
    assert_true(__asan_address_is_poisoned(a + 207));
    assert_true(__asan_address_is_poisoned(b));
#endif
    assert_ptr_equal(m_alloc(&p, 208), b); /* last in, first out */
#if defined(GR_ASAN)
    assert_false(__asan_address_is_poisoned(b - 16));
    assert_false(__asan_address_is_poisoned(b + 207));
    assert_true(__asan_address_is_poisoned(a));
#endif
    memset(b, 3, 208);
    mem_pool_trim(&p, 0); /* frees a (unpoisoned first, or free() would trip) */
    assert_int_equal(p.n_free[c], 0);
    m_free(&p, b);
    mem_pool_destroy(&p);
    assert_int_equal(p.n_free[c], 0);
}
/* The bytes the pool holds (the overload guard's figure): what it took
 * from malloc, free lists included, until trimmed back. */
static void bytes_held_are_counted(void **state)
{
    (void)state;
    struct mem_pool p;
    mem_pool_init(&p);
    assert_int_equal(p.bytes, 0);
    char *a = m_alloc(&p, 100);     /* 112 + the 16-byte header */
    char *big = m_alloc(&p, 10000); /* plain malloc: 10000 + 16 */
    assert_int_equal(p.bytes, 128 + 10016);
    m_free(&p, big); /* straight back to malloc */
    assert_int_equal(p.bytes, 128);
    m_free(&p, a); /* on the free list: still held */
    assert_int_equal(p.bytes, 128);
    char *r = p.mem.realloc(m_alloc(&p, 100), 300, p.mem.mem_user_data); /* 112 block kept, a 320 one taken */
    assert_int_equal(p.bytes, 128 + 336);
    m_free(&p, r);
    mem_pool_trim(&p, 0);
    assert_int_equal(p.bytes, 0);
    a = m_alloc(&p, 32);
    m_free(&p, a);
    mem_pool_destroy(&p);
    assert_int_equal(p.bytes, 0);
}
/* OpenSSL's allocations, counted through the wrappers mem_count_openssl
 * installs (before this process used OpenSSL for anything). */
static void openssl_bytes_are_counted(void **state)
{
    (void)state;
    assert_true(mem_count_openssl());
    uint64_t base = mem_openssl_bytes();
    char *p = OPENSSL_malloc(100);
    assert_non_null(p);
    assert_int_equal(mem_openssl_bytes(), base + 116);
    memset(p, 1, 100);
    p = OPENSSL_realloc(p, 5000);
    assert_non_null(p);
    assert_int_equal(p[99], 1);
    assert_int_equal(mem_openssl_bytes(), base + 5016);
    p = OPENSSL_realloc(p, 10);
    assert_int_equal(mem_openssl_bytes(), base + 26);
    OPENSSL_free(p);
    OPENSSL_free(NULL);
    assert_int_equal(mem_openssl_bytes(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_fit_sizes),         cmocka_unit_test(blocks_are_reused_by_class),
        cmocka_unit_test(free_blocks_are_poisoned),  cmocka_unit_test(bytes_held_are_counted),
        cmocka_unit_test(openssl_bytes_are_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
