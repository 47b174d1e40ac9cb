/* The pieces of hibernation that stand alone: the frame-boundary tracker,
 * the slab pool, and trimming the worker's free lists and stream cache. The
 * swap of sessions itself is tested against real clients
 * (tests/integration/test_hibernate.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/buf.h"
#include "grelay/h2_common.h"
#include "grelay/h2_hibernate.h"
#include "grelay/mem.h"
#include "grelay/slab.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <nghttp2/nghttp2.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#include <stdlib.h>
#include <string.h>

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

static size_t frame(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint32_t id)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(id >> 24);
    p[6] = (uint8_t)(id >> 16);
    p[7] = (uint8_t)(id >> 8);
    p[8] = (uint8_t)id;
    memset(p + 9, 0xab, len);
    return 9 + len;
}

/* A client's opening: preface, SETTINGS, HEADERS without END_HEADERS, a
 * CONTINUATION that ends the block, DATA. Returns its length; *ends gets the
 * offsets after which the stream is at a boundary (outside a header block). */
static size_t opening(uint8_t *buf, size_t *ends, size_t *n_ends)
{
    size_t n = 0, k = 0;
    memcpy(buf, PREFACE, 24);
    n = 24;
    ends[k++] = n;
    n += frame(buf + n, 12, NGHTTP2_SETTINGS, 0, 0);
    ends[k++] = n;
    n += frame(buf + n, 20, NGHTTP2_HEADERS, 0, 1);
    n += frame(buf + n, 7, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1);
    ends[k++] = n;
    n += frame(buf + n, 300, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1);
    ends[k++] = n;
    n += frame(buf + n, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
    ends[k++] = n;
    *n_ends = k;
    return n;
}

static void frames_boundary_at_every_split(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t ends[8], n_ends;
    size_t len = opening(buf, ends, &n_ends);
    /* Fed whole, in two pieces split anywhere, or byte by byte: the tracker
     * is at a boundary exactly after the listed offsets. */
    for (size_t cut = 0; cut <= len; cut++) {
        struct h2_frames t;
        h2_common_frames_init(&t);
        assert_false(h2_common_frames_at_boundary(&t));
        h2_common_frames_feed(&t, buf, cut, NULL, NULL);
        bool want = false;
        for (size_t i = 0; i < n_ends; i++)
            want |= ends[i] == cut;
        assert_int_equal(h2_common_frames_at_boundary(&t), want);
        h2_common_frames_feed(&t, buf + cut, len - cut, NULL, NULL);
        assert_true(h2_common_frames_at_boundary(&t));
    }
    struct h2_frames t;
    h2_common_frames_init(&t);
    size_t seen = 0;
    for (size_t i = 0; i < len; i++) {
        h2_common_frames_feed(&t, buf + i, 1, NULL, NULL);
        seen += h2_common_frames_at_boundary(&t);
    }
    assert_int_equal(seen, n_ends);
}

static void frames_open_header_block_is_no_boundary(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct h2_frames t;
    h2_common_frames_init(&t);
    h2_common_frames_feed(&t, (const uint8_t *)PREFACE, 24, NULL, NULL);
    assert_true(h2_common_frames_at_boundary(&t));
    size_t n = frame(buf, 5, NGHTTP2_HEADERS, 0, 3);
    h2_common_frames_feed(&t, buf, n, NULL, NULL);
    assert_false(h2_common_frames_at_boundary(&t)); /* a CONTINUATION must follow */
    n = frame(buf, 5, NGHTTP2_CONTINUATION, 0, 3);
    h2_common_frames_feed(&t, buf, n, NULL, NULL);
    assert_false(h2_common_frames_at_boundary(&t));
    n = frame(buf, 0, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 3);
    h2_common_frames_feed(&t, buf, n, NULL, NULL);
    assert_true(h2_common_frames_at_boundary(&t));
    /* A 16 MiB frame's header alone leaves its payload to come. */
    n = frame(buf, 0, NGHTTP2_DATA, 0, 3);
    buf[0] = 0xff;
    h2_common_frames_feed(&t, buf, 9, NULL, NULL);
    assert_false(h2_common_frames_at_boundary(&t));
    assert_int_equal(t.left, 0xff0000u);
}

static void slab_reuses_and_zeroes(void **state)
{
    (void)state;
    struct slab_pool p;
    slab_pool_init(&p, 40, 4);
    assert_int_equal(p.size, 48);
    void *objs[10];
    for (int i = 0; i < 10; i++) {
        objs[i] = slab_alloc(&p);
        assert_non_null(objs[i]);
        assert_int_equal(((uintptr_t)objs[i]) % 16, 0);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(objs[i], objs[j]);
        memset(objs[i], 0x5a, 40);
    }
    slab_free(&p, objs[3]);
    uint8_t *again = slab_alloc(&p);
    assert_ptr_equal(again, objs[3]); /* the last freed comes back first */
    for (int i = 0; i < 40; i++)
        assert_int_equal(again[i], 0);
    for (int i = 0; i < 10; i++)
        slab_free(&p, objs[i]);
    slab_pool_destroy(&p);
}

static void pools_trim_to_what_they_keep(void **state)
{
    (void)state;
    struct chunk_pool cp;
    buf_pool_init(&cp, 100);
    struct buf b;
    buf_init(&b);
    static uint8_t big[10 * CHUNK_SIZE];
    assert_int_equal(buf_append(&b, &cp, big, sizeof(big)), 0);
    buf_clear(&b, &cp);
    assert_int_equal(cp.big.n_free, 10);
    assert_int_equal(buf_pool_trim(&cp, 3), 0); /* all ten were in use since the last trim */
    assert_int_equal(buf_pool_trim(&cp, 3), 7); /* a whole period unused: all but three go */
    assert_int_equal(cp.big.n_free, 3);
    assert_int_equal(buf_pool_trim(&cp, 3), 0);
    assert_int_equal(buf_append(&b, &cp, big, 2 * CHUNK_SIZE), 0); /* takes two: one stays unused */
    buf_clear(&b, &cp);
    assert_int_equal(buf_pool_trim(&cp, 0), 1);
    assert_int_equal(cp.big.n_free, 2);
    buf_pool_destroy(&cp);
    assert_int_equal(cp.big.n_free, 0);

    struct mem_pool mp;
    mem_pool_init(&mp);
    void *blocks[20];
    for (int i = 0; i < 20; i++)
        blocks[i] = mp.mem.malloc(100, mp.mem.mem_user_data);
    for (int i = 0; i < 20; i++)
        mp.mem.free(blocks[i], mp.mem.mem_user_data);
    assert_int_equal(mp.n_free[mem_class(100)], 20); /* 100 bytes: the 112-byte class */
    mem_pool_trim(&mp, 5);
    assert_int_equal(mp.n_free[mem_class(100)], 5);
    mem_pool_destroy(&mp);
}

/* The stream cache keeps what a burst needed and gives back, on each trim,
 * only the streams no call took since the trim before. */
static void stream_cache_gives_back_what_went_unused(void **state)
{
    (void)state;
    struct worker *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    stream_cache_init(w);
    for (int i = 0; i < 10; i++) {
        struct stream *s = calloc(1, sizeof(*s));
        assert_non_null(s);
        worker_cache_put(&w->streams, s);
    }
    assert_int_equal(w->streams.n, 10);
    w->streams.low = 4; /* a burst took six of them since the last trim */
    assert_int_equal(worker_cache_trim(&w->streams, false), 4);
    assert_int_equal(w->streams.n, 6);
    assert_int_equal(w->streams.low, 6);
#if defined(__SANITIZE_ADDRESS__)
    /* What the cache holds is off limits to ASan, all of it but the head's
     * link: a use of a freed stream (its downstream, its arena) is reported. */
    struct stream *second = *(struct stream **)w->streams.head;
    assert_true(__asan_address_is_poisoned(&second->down));
    assert_true(__asan_address_is_poisoned(&((struct stream *)w->streams.head)->arena));
#endif
    void *taken[6];
    size_t left = 0;
    while (left < 6 && (taken[left] = worker_cache_get(&w->streams)) != NULL)
        left++;
    assert_int_equal(left, 6);
    assert_null(worker_cache_get(&w->streams));
    for (size_t i = 0; i < left; i++)
        worker_cache_put(&w->streams, taken[i]);
    w->streams.low = w->streams.n;                              /* counting them was no call */
    assert_int_equal(worker_cache_trim(&w->streams, false), 6); /* no call came: all go */
    assert_null(w->streams.head);
    assert_int_equal(worker_cache_trim(&w->streams, false), 0);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_boundary_at_every_split),
        cmocka_unit_test(frames_open_header_block_is_no_boundary),
        cmocka_unit_test(slab_reuses_and_zeroes),
        cmocka_unit_test(pools_trim_to_what_they_keep),
        cmocka_unit_test(stream_cache_gives_back_what_went_unused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
