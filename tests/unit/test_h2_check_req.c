/* grelay's checks of client requests (h2_check.h, the request side),
 * against the reference they replace: each case is sent, as real frames,
 * to an nghttp2 server session with HTTP messaging on (the library grelay
 * links, so its rules, not a copy of them), and the verdict (the stream
 * reset, or the request taken) must be the one h2_check_req gives when fed
 * the same fields, blocks and DATA as h2_server.c feeds it. The cases: every
 * byte in every kind of field, of every length to 17 (the word-at-a-time
 * checks' edges), every pseudo header missing, doubled, empty
 * or late, connection-specific fields, te, CONNECT and OPTIONS forms,
 * content-length against DATA, and trailers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/h2_check.h"
#include "h2_ref.h"

#include <stdio.h>
#include <string.h>

#define MAX_FIELDS H2_REF_MAX_FIELDS
#define MAX_DATA H2_REF_MAX_DATA

static void set_field(struct h2_ref_field *f, const void *name, size_t namelen, const void *value, size_t valuelen)
{
    assert_true(namelen <= sizeof(f->name) && valuelen <= sizeof(f->value));
    memcpy(f->name, name, namelen);
    f->namelen = namelen;
    memcpy(f->value, value, valuelen);
    f->valuelen = valuelen;
}

static void add(struct h2_ref_field *v, size_t *n, const char *name, const char *value)
{
    assert_true(*n < MAX_FIELDS);
    set_field(&v[(*n)++], name, strlen(name), value, strlen(value));
}

/* A good gRPC request head, as grpc clients send it, with no body. */
static void base(struct h2_ref_req *r, const char *what)
{
    memset(r, 0, sizeof(*r));
    r->what = what;
    add(r->head, &r->n_head, ":method", "POST");
    add(r->head, &r->n_head, ":scheme", "http");
    add(r->head, &r->n_head, ":path", "/pkg.Svc/Method");
    add(r->head, &r->n_head, ":authority", "example.com:50051");
    add(r->head, &r->n_head, "content-type", "application/grpc");
    add(r->head, &r->n_head, "te", "trailers");
}

static void drop(struct h2_ref_req *r, size_t i)
{
    memmove(&r->head[i], &r->head[i + 1], (r->n_head - i - 1) * sizeof(r->head[0]));
    r->n_head--;
}

static unsigned n_cases, n_rejected;

/* The verdicts agree; expect (0 taken, 1 reset, -1 either) pins the
 * reference too, so that a case meant to be malformed is. */
static void check(const struct h2_ref_req *r, int expect)
{
    enum h2_ref_verdict v = h2_ref_nghttp2(r);
    if (v == H2_REF_CONN_ERROR || v == H2_REF_OTHER_RESET)
        fail_msg("case \"%s\": not a stream-level HTTP messaging case (nghttp2's verdict %d)", r->what, (int)v);
    bool ref = v == H2_REF_RESETS, ours = h2_ref_grelay_rejects(r);
    n_cases++;
    n_rejected += ref;
    if (ref != ours)
        fail_msg("case \"%s\": nghttp2 %s it, grelay %s it", r->what, ref ? "resets" : "takes",
                 ours ? "resets" : "takes");
    if (expect >= 0 && ref != (expect == 1))
        fail_msg("case \"%s\": expected nghttp2 to %s it", r->what, expect ? "reset" : "take");
}

static void good_requests(void **state)
{
    (void)state;
    struct h2_ref_req r;
    base(&r, "the base request");
    check(&r, 0);
    base(&r, "with a body and trailers");
    r.data[r.n_data++] = 5;
    add(r.trailers, &r.n_trailers, "x-trailer", "1");
    r.trailers_end = true;
    check(&r, 0);
    base(&r, "host instead of :authority");
    drop(&r, 3);
    add(r.head, &r.n_head, "host", "example.com");
    check(&r, 0);
    base(&r, "host and :authority");
    add(r.head, &r.n_head, "host", "example.com");
    check(&r, 0);
    base(&r, "obs-text in a value");
    add(r.head, &r.n_head, "x-a", "caf\xc3\xa9");
    check(&r, 0);
}

/* Every byte, at the start, middle and end of each kind of field. */
static void each_byte_everywhere(void **state)
{
    (void)state;
    static const char *pseudo[] = {":method", ":scheme", ":path", ":authority"};
    static const char *pseudo_val[] = {"POST", "http", "/pkg.Svc/Method", "example.com:50051"};
    for (unsigned b = 0; b < 256; b++) {
        uint8_t ch = (uint8_t)b;
        struct h2_ref_req r;
        uint8_t buf[40];
        char what[64];
        /* In a regular name: "x-" b "y". */
        base(&r, what);
        snprintf(what, sizeof(what), "byte %u in a name", b);
        memcpy(buf, "x-", 2);
        buf[2] = ch;
        buf[3] = 'y';
        set_field(&r.head[r.n_head++], buf, 4, "v", 1);
        check(&r, -1);
        /* In a regular value: first, middle, last. */
        for (int at = 0; at < 3; at++) {
            base(&r, what);
            snprintf(what, sizeof(what), "byte %u at %d in a value", b, at);
            memcpy(buf, "abc", 3);
            buf[at] = ch;
            set_field(&r.head[r.n_head++], "x-v", 3, buf, 3);
            check(&r, -1);
        }
        /* In content-type's value (it has a fast path). */
        for (int at = 0; at < 3; at++) {
            base(&r, what);
            snprintf(what, sizeof(what), "byte %u at %d in content-type", b, at);
            memcpy(buf, "application/grpc", 16);
            buf[at == 0 ? 0 : at == 1 ? 11 : 15] = ch;
            set_field(&r.head[4], "content-type", 12, buf, 16);
            check(&r, -1);
        }
        /* In each pseudo header's value, and in host. */
        for (size_t p = 0; p < 4; p++) {
            for (int at = 0; at < 2; at++) {
                base(&r, what);
                snprintf(what, sizeof(what), "byte %u at %s of %s", b, at ? "end" : "2", pseudo[p]);
                size_t len = strlen(pseudo_val[p]);
                memcpy(buf, pseudo_val[p], len);
                buf[at ? len - 1 : 1] = ch;
                set_field(&r.head[p], pseudo[p], strlen(pseudo[p]), buf, len);
                check(&r, -1);
            }
        }
        base(&r, what);
        snprintf(what, sizeof(what), "byte %u in host", b);
        drop(&r, 3);
        memcpy(buf, "ex", 2);
        buf[1] = ch;
        set_field(&r.head[r.n_head++], "host", 4, buf, 2);
        check(&r, -1);
        /* In a trailer's name and value. */
        base(&r, what);
        snprintf(what, sizeof(what), "byte %u in a trailer", b);
        r.data[r.n_data++] = 1;
        buf[0] = 'v';
        buf[1] = ch;
        set_field(&r.trailers[r.n_trailers++], "x-t", 3, buf, 2);
        r.trailers_end = true;
        check(&r, -1);
    }
}

/* Every length up to 17 (the word-at-a-time checks' edges: below 4, below
 * 8, 8 and past it), every position, the bytes at the edges of each
 * character set, in every kind of field. */
static void each_length_and_position(void **state)
{
    (void)state;
    static const uint8_t edge[] = {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x21, 0x22, 0x2f, 0x3a, 0x40,
                                   0x41, 0x5a, 0x5b, 0x5c, 0x60, 0x61, 0x7a, 0x7b, 0x7e, 0x7f, 0x80, 0xff};
    static const struct {
        const char *name; /* the field, or NULL for a regular name of the length */
        size_t at;        /* which head field it replaces (6: added) */
        char fill;        /* a good byte to fill it with */
    } kinds[] = {{"x-v", 6, 'a'},     {":path", 2, 'a'}, {":authority", 3, 'a'}, {":method", 0, 'A'},
                 {":scheme", 1, 'h'}, {NULL, 6, 'x'},    {"host", 6, 'a'}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        for (size_t len = 1; len <= 17; len++)
            for (size_t pos = 0; pos < len; pos++)
                for (size_t e = 0; e < sizeof(edge); e++) {
                    struct h2_ref_req r;
                    char what[96];
                    uint8_t buf[40];
                    base(&r, what);
                    snprintf(what, sizeof(what), "%s of %zu bytes, 0x%02x at %zu",
                             kinds[k].name ? kinds[k].name : "a name", len, edge[e], pos);
                    memset(buf, kinds[k].fill, len);
                    if (k == 1)
                        buf[0] = '/'; /* an http :path starts with one */
                    buf[pos] = edge[e];
                    struct h2_ref_field *f = kinds[k].at < 6 ? &r.head[kinds[k].at] : &r.head[r.n_head++];
                    if (kinds[k].name == NULL)
                        set_field(f, buf, len, "v", 1);
                    else
                        set_field(f, kinds[k].name, strlen(kinds[k].name), buf, len);
                    check(&r, -1);
                }
}

static void pseudo_header_rules(void **state)
{
    (void)state;
    struct h2_ref_req r;
    char what[64];
    for (size_t p = 0; p < 4; p++) {
        base(&r, what);
        snprintf(what, sizeof(what), "without pseudo header %zu", p);
        drop(&r, p);
        check(&r, 1);
        base(&r, what);
        snprintf(what, sizeof(what), "pseudo header %zu twice", p);
        r.head[r.n_head] = r.head[p];
        memmove(&r.head[p + 1], &r.head[p], (r.n_head - p) * sizeof(r.head[0]));
        r.n_head++;
        check(&r, 1);
        base(&r, what);
        snprintf(what, sizeof(what), "pseudo header %zu empty", p);
        r.head[p].valuelen = 0;
        check(&r, 1);
        base(&r, what);
        snprintf(what, sizeof(what), "pseudo header %zu after a regular field", p);
        struct h2_ref_field f = r.head[p];
        drop(&r, p);
        r.head[r.n_head++] = f;
        check(&r, 1);
    }
    static const char *bad_pseudo[] = {":status", ":protocol", ":foo", ":", ":PATH"};
    for (size_t i = 0; i < sizeof(bad_pseudo) / sizeof(bad_pseudo[0]); i++) {
        base(&r, bad_pseudo[i]);
        set_field(&r.head[r.n_head], bad_pseudo[i], strlen(bad_pseudo[i]), "x", 1);
        memmove(&r.head[1], &r.head[0], r.n_head * sizeof(r.head[0]));
        set_field(&r.head[0], bad_pseudo[i], strlen(bad_pseudo[i]), "x", 1);
        r.n_head++;
        check(&r, 1);
    }
    base(&r, "two hosts");
    add(r.head, &r.n_head, "host", "a");
    add(r.head, &r.n_head, "host", "a");
    check(&r, 1);
    base(&r, "an empty host");
    add(r.head, &r.n_head, "host", "");
    check(&r, 1);
    base(&r, "a pseudo header in trailers");
    r.data[r.n_data++] = 1;
    add(r.trailers, &r.n_trailers, ":path", "/x");
    r.trailers_end = true;
    check(&r, 1);
}

static void paths_schemes_methods(void **state)
{
    (void)state;
    static const char *methods[] = {"GET", "OPTIONS", "CONNECT", "HEAD", "post", "M-SEARCH"};
    static const char *schemes[] = {"http", "https", "HTTP", "HtTpS", "grpc", "h", "1http", "ht+t-p.s", "httpx"};
    static const char *paths[] = {"/", "*", "x", "/x", "**", "?", "%2F"};
    char what[96];
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
        for (size_t s = 0; s < sizeof(schemes) / sizeof(schemes[0]); s++)
            for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
                struct h2_ref_req r;
                base(&r, what);
                snprintf(what, sizeof(what), "%s %s %s", methods[m], schemes[s], paths[p]);
                set_field(&r.head[0], ":method", 7, methods[m], strlen(methods[m]));
                set_field(&r.head[1], ":scheme", 7, schemes[s], strlen(schemes[s]));
                set_field(&r.head[2], ":path", 5, paths[p], strlen(paths[p]));
                check(&r, -1);
            }
    /* CONNECT: :authority only; with :scheme or :path; without :authority. */
    struct h2_ref_req r;
    base(&r, "CONNECT authority only");
    r.n_head = 0;
    add(r.head, &r.n_head, ":method", "CONNECT");
    add(r.head, &r.n_head, ":authority", "example.com:443");
    check(&r, 0);
    base(&r, "CONNECT with a content-length and a different body");
    r.n_head = 0;
    add(r.head, &r.n_head, ":method", "CONNECT");
    add(r.head, &r.n_head, ":authority", "example.com:443");
    add(r.head, &r.n_head, "content-length", "3");
    r.data[r.n_data++] = 7;
    check(&r, 0);
    base(&r, "CONNECT with host only");
    r.n_head = 0;
    add(r.head, &r.n_head, ":method", "CONNECT");
    add(r.head, &r.n_head, "host", "example.com:443");
    check(&r, 1);
}

static void connection_fields_and_te(void **state)
{
    (void)state;
    static const char *names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"};
    struct h2_ref_req r;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        base(&r, names[i]);
        add(r.head, &r.n_head, names[i], "x");
        check(&r, 1);
        base(&r, names[i]); /* in trailers too */
        r.data[r.n_data++] = 1;
        add(r.trailers, &r.n_trailers, names[i], "x");
        r.trailers_end = true;
        check(&r, 1);
    }
    static const char *te[] = {"trailers", "TRAILERS", "Trailers", "trailers, deflate",
                               "gzip",     "",         "trailer",  "trailersx"};
    for (size_t i = 0; i < sizeof(te) / sizeof(te[0]); i++) {
        base(&r, te[i]);
        set_field(&r.head[5], "te", 2, te[i], strlen(te[i]));
        check(&r, i < 3 ? 0 : 1);
    }
    base(&r, "an upper-case name");
    add(r.head, &r.n_head, "X-Up", "1");
    check(&r, 1);
    base(&r, "an empty name");
    set_field(&r.head[r.n_head++], "", 0, "1", 1);
    check(&r, 1);
    base(&r, "edge whitespace");
    add(r.head, &r.n_head, "x-a", " 1");
    check(&r, 1);
    base(&r, "an empty value");
    add(r.head, &r.n_head, "x-a", "");
    check(&r, 0);
}

/* content-length against the DATA (and END_STREAM) that follow. */
static void content_length_against_data(void **state)
{
    (void)state;
    static const struct {
        const char *cl;
        size_t data[MAX_DATA];
        size_t n;
        bool trailers;
        int expect;
    } cases[] = {
        {"5", {5}, 1, false, 0},
        {"5", {4}, 1, false, 1},
        {"5", {6}, 1, false, 1},
        {"5", {3, 2}, 2, false, 0},
        {"5", {3, 3}, 2, false, 1},
        {"5", {3, 2, 0}, 3, false, 0},
        {"0", {0}, 0, false, 0},
        {"1", {0}, 0, false, 1},
        {"5", {5}, 1, true, 0},
        {"5", {4}, 1, true, 1},
        {"abc", {0}, 0, false, 1},
        {"", {0}, 0, false, 1},
        {" 5", {5}, 1, false, 1},
        {"-1", {0}, 0, false, 1},
        {"+5", {5}, 1, false, 1},
        {"05", {5}, 1, false, 0},
        {"9223372036854775807", {1}, 1, false, 1},
        {"9223372036854775808", {1}, 1, false, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct h2_ref_req r;
        char what[64];
        base(&r, what);
        snprintf(what, sizeof(what), "content-length %s, %zu DATA", cases[i].cl, cases[i].n);
        add(r.head, &r.n_head, "content-length", cases[i].cl);
        memcpy(r.data, cases[i].data, sizeof(r.data));
        r.n_data = cases[i].n;
        if (cases[i].trailers) {
            add(r.trailers, &r.n_trailers, "x-t", "1");
            r.trailers_end = true;
        }
        check(&r, cases[i].expect);
    }
    static const struct {
        const char *cl;
        size_t data[MAX_DATA];
        size_t n;
        int expect;
    } open_cases[] = {{"5", {6}, 1, 1}, {"5", {3, 3}, 2, 1}, {"5", {5}, 1, 0}, {"5", {4}, 1, 0}, {"0", {1}, 1, 1}};
    for (size_t i = 0; i < sizeof(open_cases) / sizeof(open_cases[0]); i++) {
        struct h2_ref_req r;
        char what[64];
        base(&r, what);
        snprintf(what, sizeof(what), "content-length %s, %zu DATA, no END_STREAM", open_cases[i].cl, open_cases[i].n);
        add(r.head, &r.n_head, "content-length", open_cases[i].cl);
        memcpy(r.data, open_cases[i].data, sizeof(r.data));
        r.n_data = open_cases[i].n;
        r.open = true;
        check(&r, open_cases[i].expect);
    }
    struct h2_ref_req r;
    base(&r, "two content-lengths");
    add(r.head, &r.n_head, "content-length", "1");
    add(r.head, &r.n_head, "content-length", "1");
    r.data[r.n_data++] = 1;
    check(&r, 1);
    base(&r, "a content-length in trailers only");
    r.data[r.n_data++] = 2;
    add(r.trailers, &r.n_trailers, "content-length", "2");
    r.trailers_end = true;
    check(&r, 0);
    base(&r, "a content-length in the head and the trailers");
    add(r.head, &r.n_head, "content-length", "2");
    r.data[r.n_data++] = 2;
    add(r.trailers, &r.n_trailers, "content-length", "2");
    r.trailers_end = true;
    check(&r, 1);
}

static void trailers_rules(void **state)
{
    (void)state;
    struct h2_ref_req r;
    base(&r, "trailers with END_STREAM");
    r.data[r.n_data++] = 1;
    add(r.trailers, &r.n_trailers, "x-t", "1");
    r.trailers_end = true;
    check(&r, 0);
    base(&r, "trailers without END_STREAM");
    r.data[r.n_data++] = 1;
    add(r.trailers, &r.n_trailers, "x-t", "1");
    r.trailers_end = false;
    check(&r, 1);
    base(&r, "a host in the head and in trailers");
    drop(&r, 3);
    add(r.head, &r.n_head, "host", "a");
    r.data[r.n_data++] = 1;
    add(r.trailers, &r.n_trailers, "host", "a");
    r.trailers_end = true;
    check(&r, 1);
    base(&r, "a host in trailers only");
    r.data[r.n_data++] = 1;
    add(r.trailers, &r.n_trailers, "host", "a");
    r.trailers_end = true;
    check(&r, 0);
}

/* The cases above are not all of one verdict: the comparison can fail
 * both ways. */
static void both_verdicts_seen(void **state)
{
    (void)state;
    print_message("%u cases, %u of them malformed by nghttp2's rules\n", n_cases, n_rejected);
    assert_true(n_cases > 2000);
    assert_true(n_rejected > 500 && n_rejected < n_cases - 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_requests),
        cmocka_unit_test(each_byte_everywhere),
        cmocka_unit_test(each_length_and_position),
        cmocka_unit_test(pseudo_header_rules),
        cmocka_unit_test(paths_schemes_methods),
        cmocka_unit_test(connection_fields_and_te),
        cmocka_unit_test(content_length_against_data),
        cmocka_unit_test(trailers_rules),
        cmocka_unit_test(both_verdicts_seen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
