/* gRPC-Web codec: content types, streaming base64, frame checks, trailer frame; CORS origins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/cors.h"
#include "grelay/grpcweb.h"
#include "grelay/h1_strict.h"
#include "grelay/nv.h"

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

#define FIELD_OK(n, v) grpcweb_field_ok((const uint8_t *)(n), sizeof(n) - 1, (const uint8_t *)(v), sizeof(v) - 1)

/* Review F16: grelay itself refuses what would split an HTTP/1.1 head. */
static void field_check(void **state)
{
    (void)state;
    assert_true(FIELD_OK("x-a", "b c\td"));
    assert_true(FIELD_OK("x-a", ""));
    assert_true(FIELD_OK("x-a", "caf\xc3\xa9"));
    assert_false(FIELD_OK("x-a", "b\r\nset-cookie: x"));
    assert_false(FIELD_OK("x-a", "b\nc"));
    assert_false(FIELD_OK("x-a", "b\rc"));
    assert_false(FIELD_OK("x-a", "b\0c"));
    assert_false(FIELD_OK("x a", "b"));
    assert_false(FIELD_OK("x-a:", "b"));
    assert_false(FIELD_OK("x\r\na", "b"));
    assert_false(FIELD_OK("", "b"));
}

/* A trailer that cannot be written: the call's status becomes INTERNAL. */
static void trailer_frame_refuses_bad_values(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 512);
    struct hdr_list t;
    headers_init(&t);
    headers_add(&t, &a, (const uint8_t *)"grpc-status", 11, (const uint8_t *)"0", 1);
    headers_add(&t, &a, (const uint8_t *)"x-gone", 6, (const uint8_t *)"b", 1);
    headers_add(&t, &a, (const uint8_t *)"x-a", 3, (const uint8_t *)"b\r\n\r\nHTTP/1.1 200", 17);
    headers_remove(&t, "x-gone");
    struct grpcweb w;
    memset(&w, 0, sizeof(w));
    assert_int_equal(grpcweb_build_trailer(&w, &a, &t), 0);
    const char body[] = "grpc-status: 13\r\ngrpc-message: " GRPCWEB_INVALID_VALUE "\r\n";
    assert_int_equal(w.trailer_len, 5 + strlen(body));
    assert_int_equal(w.trailer[4], strlen(body));
    assert_memory_equal(w.trailer + 5, body, strlen(body));
    /* Removed entries are not written (they used to come out as ": b"). */
    headers_init(&t);
    headers_add(&t, &a, (const uint8_t *)"grpc-status", 11, (const uint8_t *)"0", 1);
    headers_add(&t, &a, (const uint8_t *)"x-gone", 6, (const uint8_t *)"b", 1);
    headers_remove(&t, "x-gone");
    memset(&w, 0, sizeof(w));
    assert_int_equal(grpcweb_build_trailer(&w, &a, &t), 0);
    assert_int_equal(w.trailer_len, 5 + strlen("grpc-status: 0\r\n"));
    arena_free(&a);
}

/* The Origin a CORS answer reflects goes through the same check before it
 * reaches an HTTP/1.1 head (h1_server.c writes only fields that pass). */
static void reflected_origin_is_checked(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    const char *any[] = {"*"};
    struct gr_cors_cfg star = {.set = true, .allow_origins = any, .n_allow_origins = 1, .expose_value = "grpc-status"};
    const char evil[] = "https://a.test\r\nset-cookie: s=1";
    assert_true(cors_origin_allowed(&star, evil, sizeof(evil) - 1)); /* a lone star grants any origin */
    struct gr_hdr origin = {(const uint8_t *)"origin", (const uint8_t *)evil, 6, sizeof(evil) - 1};
    struct hdr_list none;
    headers_init(&none);
    struct nv_resp r = {.content_type = "application/grpc-web", .web = true, .cors = &star, .origin = &origin};
    size_t n = 0, bad = 0, acao = 0;
    nghttp2_nv *nva = nv_response(&a, "200", &none, true, &r, &n);
    assert_non_null(nva);
    for (size_t i = 0; i < n; i++) {
        if (nva[i].namelen == 27 && memcmp(nva[i].name, "access-control-allow-origin", 27) == 0)
            acao++;
        if (nva[i].name[0] != ':' && !grpcweb_field_ok(nva[i].name, nva[i].namelen, nva[i].value, nva[i].valuelen))
            bad++;
    }
    assert_int_equal(acao, 1);
    assert_int_equal(bad, 1); /* the reflected Origin, and only it */
    arena_free(&a);
}

/* The strict HTTP/1.1 framing check gives the same verdict however the
 * bytes are cut (it runs on each read). */
static int scan_whole(const char *req, size_t len, size_t *used, bool *done)
{
    struct h1_strict st;
    h1_strict_init(&st);
    int rc = h1_strict_scan(&st, (const uint8_t *)req, len, used);
    *done = h1_strict_done(&st);
    return rc;
}

static int scan_bytewise(const char *req, size_t len, size_t *used, bool *done)
{
    struct h1_strict st;
    h1_strict_init(&st);
    size_t i = 0, u = 0;
    int rc = 0;
    while (i < len && rc == 0 && !h1_strict_done(&st)) {
        rc = h1_strict_scan(&st, (const uint8_t *)req + i, 1, &u);
        i += u;
    }
    *used = i;
    *done = h1_strict_done(&st);
    return rc;
}

static void h1_strict_verdicts(void **state)
{
    (void)state;
#define H "POST /x HTTP/1.1\r\nHost: a\r\n"
    static const struct {
        const char *req;
        int want;
    } cases[] = {
        {H "Content-Length: 2\r\n\r\nab", 0},
        {H "Transfer-Encoding: chunked\r\n\r\n2;e=1\r\nab\r\n0\r\nX-T: 1\r\n\r\n", 0},
        {H "Transfer-Encoding:\tChunked\r\n\r\n0\r\n\r\n", 0},
        {H "Content-Length: 002 \r\n\r\nab", 0},
        {"\r\nGET /x HTTP/1.0\r\n\r\n", 0},
        {"\r\n\r\n\r\n\r\n\r\nGET /x HTTP/1.0\r\n\r\n", 400},
        {H "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {H "Content-Length: 2\r\nContent-Length: 2\r\n\r\nab", 400},
        {H "Content-Length: 1 2\r\n\r\nab", 400},
        {H "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
        {H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {H "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
        {H "X-A: b\r\n c\r\n\r\n", 400},
        {H "X-A: b\n\r\n", 400},
        {H "X-A: b\rc\r\n\r\n", 400},
        {H "X-A: b\x01\r\n\r\n", 400},
        {"POST  /x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"POST http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\n\r\n", 400},
        {H "Host: b\r\n\r\n", 400},
        {"POST /x HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"POST /x\r\n\r\n", 400},
        {H "Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n", 400},
        {H "Transfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n", 400},
        {H "Transfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", 400},
        {H "Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400},
    };
#undef H
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].req), u1, u2;
        bool d1, d2;
        int r1 = scan_whole(cases[i].req, len, &u1, &d1);
        int r2 = scan_bytewise(cases[i].req, len, &u2, &d2);
        if (r1 != cases[i].want)
            fail_msg("case %zu: %d, want %d", i, r1, cases[i].want);
        assert_int_equal(r2, r1);
        assert_int_equal(u2, u1);
        assert_int_equal(d1, cases[i].want == 0);
        assert_int_equal(d2, d1);
        if (cases[i].want == 0)
            assert_int_equal(u1, len); /* and it stops exactly at the end */
    }
    /* It stops at the end of a request: a pipelined one is not read. */
    const char two[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n";
    size_t used;
    bool done;
    assert_int_equal(scan_whole(two, sizeof(two) - 1, &used, &done), 0);
    assert_true(done);
    assert_int_equal(used, strlen("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(content_types),
        cmocka_unit_test(base64_split_anywhere_and_padding_between),
        cmocka_unit_test(base64_rejects_junk),
        cmocka_unit_test(frames_are_checked_across_reads),
        cmocka_unit_test(trailer_frame),
        cmocka_unit_test(cors_origins),
        cmocka_unit_test(field_check),
        cmocka_unit_test(trailer_frame_refuses_bad_values),
        cmocka_unit_test(reflected_origin_is_checked),
        cmocka_unit_test(h1_strict_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
