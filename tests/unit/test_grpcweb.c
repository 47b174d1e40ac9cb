/* gRPC-Web codec: content types, streaming base64, frame checks, trailer frame; CORS origins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/cors.h"
#include "grelay/grpcweb.h"

#include <string.h>

static bool detect(struct grpcweb *w, struct arena *a, const char *ct)
{
    return grpcweb_detect(w, a, (const uint8_t *)ct, strlen(ct));
}

static void content_types(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 512);
    struct grpcweb w;
    assert_true(detect(&w, &a, "application/grpc-web"));
    assert_false(w.text);
    assert_string_equal(w.upstream_type, "application/grpc");
    assert_true(detect(&w, &a, "application/grpc-web+proto"));
    assert_string_equal(w.upstream_type, "application/grpc+proto");
    assert_string_equal(w.content_type, "application/grpc-web+proto");
    assert_true(detect(&w, &a, "application/grpc-web-text"));
    assert_true(w.text);
    assert_true(detect(&w, &a, "application/grpc-web-text+proto"));
    assert_true(w.text);
    assert_string_equal(w.upstream_type, "application/grpc+proto");
    assert_true(detect(&w, &a, "application/grpc-web+json; charset=utf-8"));
    assert_string_equal(w.upstream_type, "application/grpc+json");
    assert_false(detect(&w, &a, "application/grpc"));
    assert_false(detect(&w, &a, "application/grpc-webx"));
    assert_false(detect(&w, &a, "text/plain"));
    arena_free(&a);
}

static void base64_split_anywhere_and_padding_between(void **state)
{
    (void)state;
    uint8_t raw[64];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 37 + 1);
    /* Two segments encoded separately: padding in the middle of the stream. */
    uint8_t enc[200];
    size_t e1 = grpcweb_base64(raw, 7, enc);
    size_t e2 = grpcweb_base64(raw + 7, sizeof(raw) - 7, enc + e1);
    size_t elen = e1 + e2;
    assert_int_equal(enc[e1 - 1], '=');
    for (size_t cut = 0; cut <= elen; cut++) {
        for (size_t cut2 = cut; cut2 <= elen; cut2 += 5) {
            struct grpcweb w;
            memset(&w, 0, sizeof(w));
            uint8_t out[200];
            size_t o = 0, n;
            assert_int_equal(grpcweb_decode(&w, enc, cut, out + o, &n), 0);
            o += n;
            assert_int_equal(grpcweb_decode(&w, enc + cut, cut2 - cut, out + o, &n), 0);
            o += n;
            assert_int_equal(grpcweb_decode(&w, enc + cut2, elen - cut2, out + o, &n), 0);
            o += n;
            assert_int_equal(o, sizeof(raw));
            assert_memory_equal(out, raw, sizeof(raw));
            assert_int_equal(w.quad_n, 0);
        }
    }
}

static void base64_rejects_junk(void **state)
{
    (void)state;
    const char *bad[] = {"AA!A", "A===", "=AAA", "AA=A", "AAA A"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct grpcweb w;
        memset(&w, 0, sizeof(w));
        uint8_t out[16];
        size_t n;
        assert_int_not_equal(grpcweb_decode(&w, (const uint8_t *)bad[i], strlen(bad[i]), out, &n), 0);
    }
    uint8_t enc[8];
    assert_int_equal(grpcweb_base64((const uint8_t *)"hi", 2, enc), 4);
    assert_memory_equal(enc, "aGk=", 4);
    assert_int_equal(grpcweb_base64((const uint8_t *)"h", 1, enc), 4);
    assert_memory_equal(enc, "aA==", 4);
}

static void frames_are_checked_across_reads(void **state)
{
    (void)state;
    struct grpcweb w;
    memset(&w, 0, sizeof(w));
    const uint8_t msg[] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 1, 0, 0, 0, 1, 'z'};
    for (size_t i = 0; i < sizeof(msg); i++)
        assert_int_equal(grpcweb_check_frames(&w, msg + i, 1, 100), 0);
    const uint8_t big[] = {0, 0, 1, 0, 0};
    assert_int_equal(grpcweb_check_frames(&w, big, 5, 1000), GR_ERR_LIMIT);
    memset(&w, 0, sizeof(w));
    const uint8_t flag[] = {0x80, 0, 0, 0, 0};
    assert_int_equal(grpcweb_check_frames(&w, flag, 5, 1000), GR_ERR_PROTO);
}

static void trailer_frame(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 512);
    struct hdr_list t;
    headers_init(&t);
    headers_add(&t, &a, (const uint8_t *)"grpc-status", 11, (const uint8_t *)"0", 1);
    headers_add(&t, &a, (const uint8_t *)"x-a", 3, (const uint8_t *)"b", 1);
    struct grpcweb w;
    memset(&w, 0, sizeof(w));
    assert_int_equal(grpcweb_build_trailer(&w, &a, &t), 0);
    const char body[] = "grpc-status: 0\r\nx-a: b\r\n";
    assert_int_equal(w.trailer_len, 5 + strlen(body));
    assert_int_equal(w.trailer[0], 0x80);
    assert_int_equal(w.trailer[4], strlen(body));
    assert_memory_equal(w.trailer + 5, body, strlen(body));
    arena_free(&a);
}

static void cors_origins(void **state)
{
    (void)state;
    const char *origins[] = {"http://localhost:3000", "https://*.example.com"};
    struct gr_cors_cfg c = {.set = true, .allow_origins = origins, .n_allow_origins = 2};
#define OK(o) cors_origin_allowed(&c, o, strlen(o))
    assert_true(OK("http://localhost:3000"));
    assert_true(OK("HTTP://LOCALHOST:3000"));
    assert_true(OK("https://app.example.com"));
    assert_false(OK("https://example.com"));
    assert_false(OK("https://a.b/.example.com"));
    assert_false(OK("https://evil:1.example.com"));
    assert_false(OK("http://app.example.com"));
    assert_false(OK("http://localhost:30001"));
    assert_false(OK(""));
    const char *any[] = {"*"};
    struct gr_cors_cfg star = {.set = true, .allow_origins = any, .n_allow_origins = 1};
    assert_true(cors_origin_allowed(&star, "https://whatever.test", 21));
    assert_false(cors_origin_allowed(NULL, "https://whatever.test", 21));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(content_types),       cmocka_unit_test(base64_split_anywhere_and_padding_between),
        cmocka_unit_test(base64_rejects_junk), cmocka_unit_test(frames_are_checked_across_reads),
        cmocka_unit_test(trailer_frame),       cmocka_unit_test(cors_origins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
