/* The abuse guard of client connections: token buckets and the frame-header
 * scan before nghttp2 reads (with a real nghttp2 server session, so that
 * "does nghttp2 still know this stream" is nghttp2's own answer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/h2_common.h"

#include <string.h>

static size_t put_frame(uint8_t *out, uint8_t type, uint8_t flags, int32_t id, const uint8_t *p, size_t n)
{
    out[0] = (uint8_t)(n >> 16);
    out[1] = (uint8_t)(n >> 8);
    out[2] = (uint8_t)n;
    out[3] = type;
    out[4] = flags;
    out[5] = (uint8_t)((uint32_t)id >> 24);
    out[6] = (uint8_t)(id >> 16);
    out[7] = (uint8_t)(id >> 8);
    out[8] = (uint8_t)id;
    if (n > 0)
        memcpy(out + 9, p, n);
    return 9 + n;
}

/* Takes until empty, refills with time, never past the burst. */
static void bucket_refills_up_to_its_burst(void **state)
{
    (void)state;
    struct h2_bucket b;
    h2_bucket_init(&b, 3, 1000);
    for (int i = 0; i < 3; i++)
        assert_true(h2_bucket_take(&b, 3, 10, 1, 1000));
    assert_false(h2_bucket_take(&b, 3, 10, 1, 1000));
    assert_true(h2_bucket_take(&b, 3, 10, 1, 1100)); /* 10/s: one back after 100 ms */
    assert_false(h2_bucket_take(&b, 3, 10, 1, 1100));
    assert_true(h2_bucket_take(&b, 3, 10, 3, 100000)); /* a long pause: the burst, no more */
    assert_false(h2_bucket_take(&b, 3, 10, 1, 100000));
    h2_bucket_give(&b, 3, 5);
    assert_true(h2_bucket_take(&b, 3, 10, 3, 100000));
    assert_false(h2_bucket_take(&b, 3, 10, 1, 100000));
    h2_bucket_init(&b, 2, 0xfffffff0u); /* the millisecond clock wraps */
    assert_true(h2_bucket_take(&b, 2, 1000, 2, 0xfffffff0u));
    assert_true(h2_bucket_take(&b, 2, 1000, 1, 0x10u));
}

static nghttp2_session *server(void)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    nghttp2_option *opt;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    assert_int_equal(h2_common_options(&opt), GR_OK);
    assert_int_equal(nghttp2_session_server_new2(&s, cbs, NULL, opt), 0);
    h2_common_free(cbs, opt);
    return s;
}

/* Frames split at every byte reach the same verdict: the 501st PING with
 * nothing sent in between ends the connection, where that PING begins. */
static void glitches_spent_at_any_split(void **state)
{
    (void)state;
    static uint8_t in[24 + 9 + 501 * 17];
    memcpy(in, H2_PREFACE, H2_PREFACE_LEN);
    size_t n = H2_PREFACE_LEN + put_frame(in + H2_PREFACE_LEN, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    size_t last = 0;
    for (int i = 0; i < 501; i++) {
        last = n;
        n += put_frame(in + n, NGHTTP2_PING, 0, 0, (const uint8_t *)"12345678", 8);
    }
    for (size_t step = 1; step <= 97; step += 8) {
        nghttp2_session *h2 = server();
        struct h2_guard g;
        struct h2_frames fr;
        h2_guard_init(&g, 100, 0);
        h2_common_frames_init(&fr);
        size_t fed = 0, at = 0;
        uint32_t code = 0;
        const char *why = NULL;
        while (at < n && code == 0) {
            size_t k = n - at < step ? n - at : step;
            size_t ok = h2_guard_scan(&g, &fr, h2, in + at, k, 0, &code, &why);
            if (code == 0)
                assert_int_equal(ok, k);
            fed = at + ok;
            at += k;
        }
        assert_int_equal(code, NGHTTP2_ENHANCE_YOUR_CALM);
        /* stopped where the 501st PING begins (or, its header split, after what nghttp2 already has) */
        assert_true(fed >= last && fed < last + 9);
        nghttp2_session_del(h2);
    }
}

/* Stream-id memory: a closed stream, one we reset, one never used, one too old. */
static void closed_streams(void **state)
{
    (void)state;
    nghttp2_session *h2 = server();
    struct h2_guard g;
    struct h2_frames fr;
    h2_guard_init(&g, 100, 0);
    h2_common_frames_init(&fr);
    uint8_t buf[64];
    uint32_t code;
    const char *why;
    memcpy(buf, H2_PREFACE, H2_PREFACE_LEN);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, H2_PREFACE_LEN, 0, &code, &why), H2_PREFACE_LEN);
    /* The client opens 1, 3, 7 (5 is skipped: implicitly closed). */
    const int32_t opened[] = {1, 3, 7};
    for (size_t i = 0; i < 3; i++) {
        size_t k = put_frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, opened[i], (const uint8_t *)"\x82", 1);
        assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), k);
    }
    h2_guard_closed(&g, 1);
    h2_guard_closed(&g, 3);
    h2_guard_sent_rst(&g, 3);
    size_t k = put_frame(buf, NGHTTP2_DATA, 0, 3, (const uint8_t *)"x", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), k); /* we reset 3: ignored */
    assert_int_equal(code, NGHTTP2_NO_ERROR);
    k = put_frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 7, (const uint8_t *)"\x82", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why),
                     k); /* opened, never closed (refused): ignored */
    struct h2_guard saved = g;
    struct h2_frames saved_fr = fr; /* the scan's place: a stopped scan has read the header */
    k = put_frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 5, (const uint8_t *)"\x82", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), 0);
    assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
    g = saved;
    fr = saved_fr;
    k = put_frame(buf, NGHTTP2_DATA, 0, 1, (const uint8_t *)"x", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), 0);
    assert_int_equal(code, NGHTTP2_STREAM_CLOSED);
    g = saved;
    fr = saved_fr;
    /* 200 streams later, stream 1 is too old to judge: ignored, one glitch. */
    k = put_frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 407, (const uint8_t *)"\x82", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), k);
    uint32_t before = g.glitches.milli;
    k = put_frame(buf, NGHTTP2_DATA, 0, 1, (const uint8_t *)"x", 1);
    assert_int_equal(h2_guard_scan(&g, &fr, h2, buf, k, 0, &code, &why), k);
    assert_int_equal(code, NGHTTP2_NO_ERROR);
    assert_int_equal(g.glitches.milli, before - 1000);
    nghttp2_session_del(h2);
}

/* The PING a drain writes by hand for a hibernated connection, and the ACK
 * it recognises without waking the session (issue 13). */
static void drain_ping_and_its_ack(void **state)
{
    (void)state;
    static const uint8_t opaque[8] = {'g', 'r', 'd', 'r', 'a', 'i', 'n', '!'};
    uint8_t ping[H2_PING_LEN];
    h2_common_ping(opaque, ping);
    static const uint8_t hdr[9] = {0, 0, 8, 6, 0, 0, 0, 0, 0};
    assert_memory_equal(ping, hdr, sizeof(hdr));
    assert_memory_equal(ping + 9, opaque, 8);
    assert_false(h2_common_is_ping_ack(ping, sizeof(ping), opaque)); /* not an ACK */
    uint8_t ack[H2_PING_LEN];
    memcpy(ack, ping, sizeof(ack));
    ack[4] = 1;
    assert_true(h2_common_is_ping_ack(ack, sizeof(ack), opaque));
    assert_false(h2_common_is_ping_ack(ack, sizeof(ack) - 1, opaque)); /* split: the session must read it */
    ack[16] ^= 1;
    assert_false(h2_common_is_ping_ack(ack, sizeof(ack), opaque)); /* someone else's PING */
}

/* DATA past a window: the connection's local window shrinks by what the
 * stream could take, never below 0, and no WINDOW_UPDATE is queued. */
static void withheld_window_never_comes_back(void **state)
{
    (void)state;
    nghttp2_session *s = server();
    assert_int_equal(nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, 1 << 20), 0);
    size_t queued = nghttp2_session_get_outbound_queue_size(s);
    h2_common_withhold_window(s, 65536);
    assert_int_equal(nghttp2_session_get_effective_local_window_size(s), (1 << 20) - 65536);
    assert_int_equal(nghttp2_session_get_outbound_queue_size(s), queued);
    for (int i = 0; i < 20; i++)
        h2_common_withhold_window(s, 65536);
    assert_int_equal(nghttp2_session_get_effective_local_window_size(s), 0);
    nghttp2_session_del(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_refills_up_to_its_burst),
        cmocka_unit_test(glitches_spent_at_any_split),
        cmocka_unit_test(closed_streams),
        cmocka_unit_test(drain_ping_and_its_ack),
        cmocka_unit_test(withheld_window_never_comes_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
