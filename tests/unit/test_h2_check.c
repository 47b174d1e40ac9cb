/* grelay's checks of upstream responses (h2_check.h), field by field and
 * block by block, against what nghttp2's HTTP messaging answered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/h2_check.h"

#include <string.h>

static enum h2_check_verdict field(struct h2_check *c, const char *name, const char *value)
{
    const char *why = NULL;
    enum h2_check_verdict v =
        h2_check_field(c, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value), &why);
    if (v != H2_CHECK_OK)
        assert_non_null(why);
    return v;
}

static enum h2_check_verdict block(struct h2_check *c, bool end_stream)
{
    const char *why = NULL;
    return h2_check_block(c, end_stream, &why);
}

/* A response's head: :status 200 and content-type, then h2_check_block. */
static void head_200(struct h2_check *c)
{
    h2_check_init(c, false);
    h2_check_begin(c);
    assert_int_equal(field(c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(c, "content-type", "application/grpc"), H2_CHECK_OK);
    assert_int_equal(block(c, false), H2_CHECK_OK);
}

/* The reference: RFC 9110 tchar, lower case. */
static bool tchar_lower(unsigned ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (ch != 0 && strchr("!#$%&'*+-.^_`|~", (int)ch));
}

/* Every byte in a regular name: good, or BAD (nghttp2 1.52 without an
 * on_invalid_header_callback resets the stream for any bad field). */
static void each_name_byte(void **state)
{
    (void)state;
    for (unsigned ch = 0; ch < 256; ch++) {
        struct h2_check c;
        h2_check_init(&c, false);
        h2_check_begin(&c);
        uint8_t name[3] = {'x', (uint8_t)ch, 'y'};
        const char *why = NULL;
        enum h2_check_verdict v = h2_check_field(&c, name, 3, (const uint8_t *)"v", 1, &why);
        enum h2_check_verdict want = tchar_lower(ch) ? H2_CHECK_OK : H2_CHECK_BAD;
        if (v != want)
            fail_msg("name byte 0x%02x: verdict %d, want %d", ch, (int)v, (int)want);
    }
}

/* Every byte in a value, at every place of a 1- to 20-byte value (the
 * 8-byte scan and its tail): only a control character other than HTAB, and
 * DEL, are BAD; SP and HTAB only at an edge. */
static void each_value_byte(void **state)
{
    (void)state;
    for (unsigned ch = 0; ch < 256; ch++) {
        for (size_t len = 1; len <= 20; len++) {
            for (size_t at = 0; at < len; at++) {
                uint8_t value[20];
                memset(value, 'v', sizeof(value));
                value[at] = (uint8_t)ch;
                struct h2_check c;
                h2_check_init(&c, false);
                h2_check_begin(&c);
                const char *why = NULL;
                enum h2_check_verdict v = h2_check_field(&c, (const uint8_t *)"x", 1, value, len, &why);
                bool ctl = (ch < 0x20 && ch != '\t') || ch == 0x7f;
                bool edge = (ch == ' ' || ch == '\t') && (at == 0 || at == len - 1);
                enum h2_check_verdict want = ctl || edge ? H2_CHECK_BAD : H2_CHECK_OK;
                if (v != want)
                    fail_msg("value byte 0x%02x at %zu of %zu: verdict %d, want %d", ch, at, len, (int)v, (int)want);
            }
        }
    }
}

static void empty_values_and_names(void **state)
{
    (void)state;
    struct h2_check c;
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "x-empty", ""), H2_CHECK_OK);
    assert_int_equal(field(&c, "", "v"), H2_CHECK_BAD);
}

static void status_rules(void **state)
{
    (void)state;
    static const char *const bad_status[] = {"20", "2000", "2x0", " 200", "200 ", "099", ""};
    for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
        struct h2_check c;
        h2_check_init(&c, false);
        h2_check_begin(&c);
        assert_int_equal(field(&c, ":status", bad_status[i]), H2_CHECK_BAD);
    }
    struct h2_check c;
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_BAD); /* twice */
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":path", "/"), H2_CHECK_BAD); /* a request's pseudo header */
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":Status", "200"), H2_CHECK_BAD);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":", "200"), H2_CHECK_BAD);
    /* After a regular field. */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "x-fine", "yes"), H2_CHECK_OK);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_BAD);
    /* No :status at all. */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "content-type", "application/grpc"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_BAD);
    /* 101 is not HTTP/2's. */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "101"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_BAD);
}

static void connection_specific_fields(void **state)
{
    (void)state;
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct h2_check c;
        h2_check_init(&c, false);
        h2_check_begin(&c);
        assert_int_equal(field(&c, names[i], "x"), H2_CHECK_BAD);
    }
    struct h2_check c;
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "te", "trailers"), H2_CHECK_OK);
    assert_int_equal(field(&c, "te", "TRAILERS"), H2_CHECK_OK);
    assert_int_equal(field(&c, "te", "gzip"), H2_CHECK_BAD);
    assert_int_equal(field(&c, "connections", "x"), H2_CHECK_OK); /* only the exact names */
}

static void informational_answers(void **state)
{
    (void)state;
    struct h2_check c;
    h2_check_init(&c, false);
    for (int i = 0; i < 3; i++) {
        h2_check_begin(&c);
        assert_int_equal(field(&c, ":status", i == 0 ? "100" : "103"), H2_CHECK_OK);
        assert_int_equal(field(&c, "content-length", "5"), H2_CHECK_OK); /* forgotten with the block */
        assert_int_equal(block(&c, false), H2_CHECK_OK);
    }
    const char *why = NULL;
    assert_int_equal(h2_check_data(&c, 1, &why), H2_CHECK_BAD); /* no DATA before the final answer */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "103"), H2_CHECK_OK);
    assert_int_equal(block(&c, true), H2_CHECK_BAD); /* END_STREAM on a 1xx */
    /* The final answer after them, with a content-length of its own. */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "100"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "5"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_OK);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "2"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_OK);
    assert_int_equal(h2_check_data(&c, 2, &why), H2_CHECK_OK);
    assert_int_equal(h2_check_end(&c, &why), H2_CHECK_OK);
}

static void content_length_against_data(void **state)
{
    (void)state;
    const char *why = NULL;
    struct h2_check c;
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "10"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "10"), H2_CHECK_BAD); /* twice */
    assert_int_equal(block(&c, false), H2_CHECK_OK);
    assert_int_equal(h2_check_data(&c, 4, &why), H2_CHECK_OK);
    assert_int_equal(h2_check_end(&c, &why), H2_CHECK_BAD); /* short */
    assert_int_equal(h2_check_data(&c, 6, &why), H2_CHECK_OK);
    assert_int_equal(h2_check_end(&c, &why), H2_CHECK_OK);
    assert_int_equal(h2_check_data(&c, 1, &why), H2_CHECK_BAD); /* past it */
    /* Trailers end the stream: the count is checked there too. */
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "7"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_OK);
    assert_int_equal(h2_check_data(&c, 6, &why), H2_CHECK_OK);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "grpc-status", "0"), H2_CHECK_OK);
    assert_int_equal(block(&c, true), H2_CHECK_BAD);
    /* Not a number. */
    static const char *const bad_len[] = {"", "-1", "1a", " 1", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
        h2_check_init(&c, false);
        h2_check_begin(&c);
        enum h2_check_verdict v = field(&c, "content-length", bad_len[i]);
        assert_true(v != H2_CHECK_OK);
    }
    /* A HEAD request, a 204, a 304: no body, whatever content-length says. */
    h2_check_init(&c, true);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_OK);
    assert_int_equal(field(&c, "content-length", "10"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_OK);
    assert_int_equal(h2_check_data(&c, 1, &why), H2_CHECK_BAD);
    h2_check_init(&c, false);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "204"), H2_CHECK_OK);
    assert_int_equal(block(&c, true), H2_CHECK_OK);
}

static void trailers_rules(void **state)
{
    (void)state;
    struct h2_check c;
    head_200(&c);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "grpc-status", "0"), H2_CHECK_OK);
    assert_int_equal(block(&c, false), H2_CHECK_BAD); /* without END_STREAM */
    head_200(&c);
    h2_check_begin(&c);
    assert_int_equal(field(&c, ":status", "200"), H2_CHECK_BAD); /* a pseudo header in trailers */
    head_200(&c);
    h2_check_begin(&c);
    assert_int_equal(field(&c, "grpc-status", "0"), H2_CHECK_OK);
    assert_int_equal(block(&c, true), H2_CHECK_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_name_byte),
        cmocka_unit_test(each_value_byte),
        cmocka_unit_test(empty_values_and_names),
        cmocka_unit_test(status_rules),
        cmocka_unit_test(connection_specific_fields),
        cmocka_unit_test(informational_answers),
        cmocka_unit_test(content_length_against_data),
        cmocka_unit_test(trailers_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
