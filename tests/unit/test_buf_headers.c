/* Chunk buffers, arena, header lists, hop-by-hop filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/arena.h"
#include "grelay/buf.h"
#include "grelay/common.h"
#include "grelay/headers.h"

#include <stdio.h>
#include <string.h>

static void buf_keeps_order_across_chunks(void **state)
{
    (void)state;
    struct chunk_pool p;
    buf_pool_init(&p, 2);
    struct buf b;
    buf_init(&b);
    static uint8_t in[100000], out[100000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7);
    size_t off = 0;
    for (size_t step = 1; off < sizeof(in); step = step * 3 + 1) {
        size_t n = step > sizeof(in) - off ? sizeof(in) - off : step;
        assert_int_equal(buf_append(&b, &p, in + off, n), 0);
        off += n;
    }
    assert_int_equal(b.len, sizeof(in));
    /* The first append (1 byte) took a small chunk; the rest went on in big ones. */
    assert_int_equal(p.small.n_out, 1);
    assert_int_equal(p.big.n_out, (sizeof(in) - CHUNK_SMALL + CHUNK_SIZE - 1) / CHUNK_SIZE);
    struct iovec iov[16];
    int cnt = buf_peek_iov(&b, iov, 16);
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    assert_int_equal(total, sizeof(in));
    size_t got = 0;
    while (got < sizeof(out)) {
        size_t n = buf_read(&b, &p, out + got, 999);
        assert_true(n > 0);
        got += n;
    }
    assert_memory_equal(in, out, sizeof(in));
    assert_int_equal(b.len, 0);
    assert_int_equal(p.big.n_out + p.small.n_out, 0);
    assert_int_equal(p.big.n_free, 2); /* the rest went back to malloc */
    assert_int_equal(p.small.n_free, 1);
    assert_int_equal(buf_read(&b, &p, out, 10), 0);
    buf_pool_destroy(&p);
}

static void buf_clear_returns_chunks(void **state)
{
    (void)state;
    struct chunk_pool p;
    buf_pool_init(&p, 16);
    struct buf b;
    buf_init(&b);
    uint8_t x[40000] = {0};
    assert_int_equal(buf_append(&b, &p, x, sizeof(x)), 0);
    buf_drain(&b, &p, 100);
    assert_int_equal(b.len, sizeof(x) - 100);
    buf_clear(&b, &p);
    assert_int_equal(b.len, 0);
    assert_null(b.head);
    assert_int_equal(p.big.n_out, 0);
    buf_pool_destroy(&p);
}

static void arena_aligns_and_handles_big_requests(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 256);
    char *s = arena_strndup(&a, "hello", 3);
    assert_string_equal(s, "hel");
    void *big = arena_alloc(&a, 10000);
    assert_non_null(big);
    memset(big, 1, 10000);
    void *small = arena_alloc(&a, 3);
    assert_int_equal((uintptr_t)small % 8, 0);
    assert_string_equal(s, "hel");
    arena_free(&a);
}

/* How a call's attempt arena is emptied for each retry (stream.c): its
 * blocks go back, its caller-provided first block stays and is handed out
 * again from its start, so N attempts cost one attempt's memory. */
static void arena_free_keeps_the_first_block_for_reuse(void **state)
{
    (void)state;
    _Alignas(16) unsigned char first[256];
    struct arena a;
    arena_init_with(&a, 512, first, sizeof(first));
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned char *p = arena_alloc(&a, 200);
        assert_ptr_equal(p, first);
        assert_non_null(arena_alloc(&a, 4000)); /* past the first block: a block of its own */
        assert_non_null(a.head);
        arena_free(&a);
        assert_null(a.head);
        assert_ptr_equal(a.first, first);
    }
}

static void header_list_and_hop_by_hop(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 128);
    struct hdr_list l;
    headers_init(&l);
    char name[16];
    for (int i = 0; i < 40; i++) {
        int n = snprintf(name, sizeof(name), "x-h%d", i);
        assert_int_equal(headers_add(&l, &a, (const uint8_t *)name, (size_t)n, (const uint8_t *)"v", 1), 0);
    }
    assert_int_equal(l.n, 40);
    assert_non_null(headers_find(&l, "x-h39"));
    assert_null(headers_find(&l, "x-h40"));
    arena_free(&a);
#define HBH(n, v) headers_hop_by_hop((const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v))
    assert_true(HBH("connection", "close"));
    assert_true(HBH("keep-alive", "5"));
    assert_true(HBH("proxy-connection", "x"));
    assert_true(HBH("transfer-encoding", "chunked"));
    assert_true(HBH("upgrade", "h2c"));
    assert_true(HBH("te", "gzip"));
    assert_false(HBH("te", "trailers"));
    assert_false(HBH("grpc-timeout", "1S"));
    assert_false(HBH("x-bin-bin", "AAA"));
    assert_false(HBH("content-type", "application/grpc"));
}

/* Under ASan a chunk waiting on the free list is poisoned whole, and whole
 * again when it is handed out (review F14); without ASan this only checks
 * that the free list hands the same chunk back. */
static void free_chunks_are_poisoned(void **state)
{
    (void)state;
    struct chunk_pool p;
    buf_pool_init(&p, 4);
    struct buf b;
    buf_init(&b);
    static const uint8_t in[CHUNK_SIZE + 10] = {1};
    assert_int_equal(buf_append(&b, &p, in, sizeof(in)), 0);
    struct chunk *first = b.head;
    buf_drain(&b, &p, CHUNK_SIZE);
    assert_int_equal(p.big.n_free, 1);
    assert_ptr_equal(p.big.free, first);
#if defined(GR_ASAN)
    assert_true(__asan_address_is_poisoned(&first->next));
    assert_true(__asan_address_is_poisoned(&first->data[0]));
    assert_true(__asan_address_is_poisoned(&first->data[CHUNK_SIZE - 1]));
#endif
    buf_clear(&b, &p);
    assert_int_equal(p.big.n_free, 2);
    assert_int_equal(buf_append(&b, &p, in, CHUNK_SMALL + 1), 0); /* too much for a small chunk */
    assert_int_equal(p.big.n_free, 1);                            /* it came off the list */
#if defined(GR_ASAN)
    assert_false(__asan_address_is_poisoned(&b.head->data[CHUNK_SIZE - 1]));
#endif
    b.head->data[CHUNK_SIZE - 1] = 7; /* the whole chunk is usable again */
    buf_clear(&b, &p);
    /* A small chunk, the same: poisoned on the list, whole again when taken. */
    assert_int_equal(buf_append(&b, &p, in, 1), 0);
    struct chunk *small = b.head;
    assert_int_equal(small->cap, CHUNK_SMALL);
    buf_clear(&b, &p);
    assert_ptr_equal(p.small.free, small);
#if defined(GR_ASAN)
    assert_true(__asan_address_is_poisoned(&small->next));
    assert_true(__asan_address_is_poisoned(&small->data[CHUNK_SMALL - 1]));
#endif
    assert_int_equal(buf_append(&b, &p, in, CHUNK_SMALL), 0);
    assert_ptr_equal(b.head, small);
    b.head->data[CHUNK_SMALL - 1] = 7;
    buf_clear(&b, &p);
    assert_int_equal(buf_pool_trim(&p, 0), 0); /* all three were taken since the last trim */
    assert_int_equal(buf_pool_trim(&p, 0), 3);
    assert_int_equal(p.big.n_free + p.small.n_free, 0);
    buf_pool_destroy(&p);
}

/* Issue 16: a queue's first append, when small, takes a 248-byte chunk, not
 * 16 KiB; a queue that grows goes on in big chunks, each byte copied once;
 * a large append to an empty queue goes straight to big chunks. */
static void small_appends_take_small_chunks(void **state)
{
    (void)state;
    struct chunk_pool p;
    buf_pool_init(&p, 4);
    struct buf q[100];
    static uint8_t in[2 * CHUNK_SIZE], out[2 * CHUNK_SIZE];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 13 + 1);
    for (int i = 0; i < 100; i++) {
        buf_init(&q[i]);
        assert_int_equal(buf_append(&q[i], &p, in, 105), 0); /* a 100-byte gRPC message */
    }
    assert_int_equal(p.small.n_out, 100);
    assert_int_equal(p.big.n_out, 0);
    assert_int_equal(buf_pool_bytes(&p), 100 * 248); /* a 16 KiB chunk each before: 1.6 MB */
    /* One queue grows: the small chunk fills, then a big one follows. */
    assert_int_equal(buf_append(&q[0], &p, in + 105, CHUNK_SIZE), 0);
    assert_int_equal(q[0].head->end, CHUNK_SMALL);
    assert_int_equal(p.big.n_out, 1);
    assert_int_equal(buf_read(&q[0], &p, out, sizeof(out)), 105 + CHUNK_SIZE);
    assert_memory_equal(out, in, 105 + CHUNK_SIZE);
    /* A whole 16 KiB message to an empty queue: one big chunk, one iovec. */
    assert_int_equal(buf_append(&q[0], &p, in, CHUNK_SIZE), 0);
    struct iovec iov[4];
    assert_int_equal(buf_peek_iov(&q[0], iov, 4), 1);
    assert_int_equal(iov[0].iov_len, CHUNK_SIZE);
    assert_int_equal(q[0].head->cap, CHUNK_SIZE);
    buf_clear(&q[0], &p);
    /* Exactly CHUNK_SMALL bytes fit a small one; the next byte takes a big one. */
    assert_int_equal(buf_append(&q[0], &p, in, CHUNK_SMALL), 0);
    assert_int_equal(buf_append(&q[0], &p, in + CHUNK_SMALL, 1), 0);
    assert_int_equal(q[0].head->cap, CHUNK_SMALL);
    assert_int_equal(q[0].tail->cap, CHUNK_SIZE);
    assert_int_equal(buf_copy_at(&q[0], CHUNK_SMALL - 2, out, 3), 3);
    assert_memory_equal(out, in + CHUNK_SMALL - 2, 3);
    for (int i = 0; i < 100; i++)
        buf_clear(&q[i], &p);
    assert_int_equal(p.small.n_out + p.big.n_out, 0);
    assert_int_equal(p.small.n_free, 64); /* 16 per big one kept free */
    buf_pool_mark_unused(&p);
    assert_int_equal(buf_pool_trim(&p, 2), 62); /* the big one is within keep */
    assert_int_equal(buf_pool_bytes(&p), 2 * 248 + offsetof(struct chunk, data) + CHUNK_SIZE);
    buf_pool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_keeps_order_across_chunks),
        cmocka_unit_test(buf_clear_returns_chunks),
        cmocka_unit_test(free_chunks_are_poisoned),
        cmocka_unit_test(small_appends_take_small_chunks),
        cmocka_unit_test(arena_aligns_and_handles_big_requests),
        cmocka_unit_test(header_list_and_hop_by_hop),
        cmocka_unit_test(arena_free_keeps_the_first_block_for_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
