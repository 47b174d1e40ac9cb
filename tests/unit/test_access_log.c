/* The access log: lines (JSON escaping, time, template operators), the
 * config check of a template, and the real writer thread (a full ring
 * drops and counts, SIGUSR1's reopen after a rename, a reconfiguration). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/access_log.h"
#include "grelay/common.h"
#include "grelay/config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STR(lit) ((struct access_str){(lit), sizeof(lit) - 1})

/* A JSON string of s (n bytes) with room to spare. */
static const char *json(const char *s, size_t n)
{
    static char out[4096];
    size_t k = access_log_json_str(out, sizeof(out) - 1, s, n);
    out[k] = '\0';
    return out;
}

/* Whether p (n bytes) is valid UTF-8 (a decoder's view, independent of the escaper's). */
static bool valid_utf8(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n)
            return false;
        unsigned cp = len == 1 ? c : c & (0x7fu >> len);
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        static const unsigned least[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static void json_escapes_hostile_strings(void **state)
{
    (void)state;
    assert_string_equal(json("a\"b\\c", 5), "\"a\\\"b\\\\c\"");
    assert_string_equal(json("\n\r\t\x01\x1f\x7f", 6), "\"\\n\\r\\t\\u0001\\u001f\x7f\"");
    assert_string_equal(json("a\0b", 3), "\"a\\u0000b\"");
    /* Valid UTF-8 passes; every byte that is not part of a valid sequence is \u00XX. */
    assert_string_equal(json("\xe2\x82\xac \xf0\x9f\x98\x80", 8), "\"\xe2\x82\xac \xf0\x9f\x98\x80\"");
    assert_string_equal(json("\xff\xc3\x28", 3), "\"\\u00ff\\u00c3(\"");
    assert_string_equal(json("\xc0\xaf", 2), "\"\\u00c0\\u00af\"");                       /* overlong '/' */
    assert_string_equal(json("\xed\xa0\x80", 3), "\"\\u00ed\\u00a0\\u0080\"");            /* a surrogate */
    assert_string_equal(json("\xf4\x90\x80\x80", 4), "\"\\u00f4\\u0090\\u0080\\u0080\""); /* past U+10FFFF */
    assert_string_equal(json("\xe2\x82", 2), "\"\\u00e2\\u0082\"");                       /* cut short */
    assert_string_equal(json("", 0), "\"\"");
}

static void json_strings_are_cut_within_their_room(void **state)
{
    (void)state;
    char out[64];
    memset(out, 'X', sizeof(out));
    size_t n = access_log_json_str(out, 10, "abcdefghijkl", 12);
    assert_int_equal(n, 10);
    assert_memory_equal(out, "\"abcde...\"", n);
    assert_int_equal(out[10], 'X'); /* nothing past the room */
    /* Exactly fitting: not cut. */
    assert_int_equal(access_log_json_str(out, 10, "abcdefgh", 8), 10);
    assert_memory_equal(out, "\"abcdefgh\"", 10);
    /* A cut never splits a character or an escape. */
    for (size_t cap = 5; cap < 40; cap++) {
        n = access_log_json_str(out, cap, "\xc3\xa9\xc3\xa9\xc3\xa9\"\"\"\x01\x01\xe2\x82\xac\xe2\x82\xac", 17);
        assert_true(n <= cap && n >= 5);
        assert_int_equal(out[0], '"');
        assert_int_equal(out[n - 1], '"');
        assert_true(valid_utf8((const unsigned char *)out, n));
        for (size_t i = 1; i + 1 < n; i++) /* an unescaped quote only at the ends */
            assert_true(out[i] != '"' || out[i - 1] == '\\');
    }
    assert_int_equal(access_log_json_str(out, 4, "abc", 3), 0);
}

static void time_is_rfc3339_utc_with_milliseconds(void **state)
{
    (void)state;
    char t[32];
    assert_int_equal(access_log_time(1796148270123, t), 24);
    assert_string_equal(t, "2026-12-01T18:04:30.123Z");
    access_log_time(0, t);
    assert_string_equal(t, "1970-01-01T00:00:00.000Z");
    access_log_time(951782400000 + 86399999, t);
    assert_string_equal(t, "2000-02-29T23:59:59.999Z");
    access_log_time(4102444799999, t);
    assert_string_equal(t, "2099-12-31T23:59:59.999Z");
    access_log_time(-1, t);
    assert_string_equal(t, "1969-12-31T23:59:59.999Z");
    /* Every day of 2024-2026 against the C library's own calendar. */
    for (int64_t s = 1704067200; s < 1798761600; s += 86400 + 3723) {
        time_t tt = (time_t)s;
        struct tm tm;
        gmtime_r(&tt, &tm);
        char want[40];
        strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S.042Z", &tm);
        access_log_time(s * 1000 + 42, t);
        assert_string_equal(t, want);
    }
}

/* A call with every field set. */
static struct access_record sample(void)
{
    return (struct access_record){
        .start_ms = 1796148270123,
        .duration_ms = 12.5,
        .listener = "ingress",
        .protocol = "h2",
        .authority = STR("api.example.com"),
        .path = STR("/helloworld.Greeter/SayHello"),
        .grpc_code = 14,
        .grpc_message = STR("no healthy endpoint"),
        .http_status = 200,
        .route = "default/0",
        .cluster = "backend",
        .upstream = "127.0.0.1:50051",
        .attempts = 2,
        .request_bytes = 17,
        .response_bytes = 0,
        .grpc_timeout = STR("1500u"),
        .request_id = STR("0f8b4c9e-2b1d-4c4e-9a57-3f0e2d1c0b9a"),
        .user_agent = STR("grpc-python/1.51"),
        .peer = "127.0.0.1:40000",
    };
}

static char *line_of(const struct gr_access_log_cfg *cfg, const struct access_record *r)
{
    static char out[ACCESS_LOG_LINE_MAX + 1];
    struct access_fmt *f = access_fmt_new(cfg);
    assert_non_null(f);
    size_t n = access_fmt_line(f, r, out, ACCESS_LOG_LINE_MAX);
    access_fmt_free(f);
    assert_true(n >= 2 && n <= ACCESS_LOG_LINE_MAX);
    assert_int_equal(out[n - 1], '\n');
    out[n] = '\0';
    return out;
}

static void json_line_has_every_field(void **state)
{
    (void)state;
    struct gr_access_log_cfg cfg = {.set = true, .path = "x", .format = ACCESS_LOG_JSON};
    struct access_record r = sample();
    assert_string_equal(line_of(&cfg, &r),
                        "{\"time\":\"2026-12-01T18:04:30.123Z\",\"duration_ms\":12.500,\"listener\":\"ingress\","
                        "\"protocol\":\"h2\",\"authority\":\"api.example.com\",\"path\":\"/helloworld.Greeter/"
                        "SayHello\",\"grpc_code\":\"UNAVAILABLE\",\"grpc_message\":\"no healthy endpoint\","
                        "\"http_status\":200,\"route\":\"default/0\",\"cluster\":\"backend\",\"upstream\":\"127.0.0.1:"
                        "50051\",\"attempts\":2,\"request_bytes\":17,\"response_bytes\":0,\"grpc_timeout_ms\":1.500,"
                        "\"request_id\":\"0f8b4c9e-2b1d-4c4e-9a57-3f0e2d1c0b9a\",\"user_agent\":\"grpc-python/1.51\","
                        "\"peer\":\"127.0.0.1:40000\"}\n");
    /* Absent values are null; a status past 16 is UNKNOWN as gRPC names it. */
    r = (struct access_record){.grpc_code = -1,
                               .listener = "l",
                               .protocol = "http1",
                               .route = "none",
                               .cluster = "none",
                               .peer = "[::1]:1",
                               .duration_ms = -3};
    char *l = line_of(&cfg, &r);
    assert_non_null(strstr(l, "\"grpc_code\":null,\"grpc_message\":null,\"http_status\":0,"));
    assert_non_null(strstr(l, "\"upstream\":null,\"attempts\":0,"));
    assert_non_null(strstr(l, "\"grpc_timeout_ms\":null,\"request_id\":null,\"user_agent\":null,"));
    assert_non_null(strstr(l, "\"duration_ms\":0.000,"));
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {0, "OK"},      {1, "CANCELLED"}, {4, "DEADLINE_EXCEEDED"}, {12, "UNIMPLEMENTED"}, {16, "UNAUTHENTICATED"},
        {99, "UNKNOWN"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        r.grpc_code = names[i].code;
        char want[64];
        snprintf(want, sizeof(want), "\"grpc_code\":\"%s\",", names[i].name);
        assert_non_null(strstr(line_of(&cfg, &r), want));
    }
    /* grpc-timeout in ms, whatever unit the client wrote; a malformed one is null. */
    static const struct {
        const char *sent;
        const char *ms;
    } timeouts[] = {{"100m", "100"}, {"5S", "5000"},  {"2M", "120000"},       {"1H", "3600000"}, {"250u", "0.250"},
                    {"1n", "0.001"}, {"12x", "null"}, {"123456789m", "null"}, {"", "null"}};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        r.grpc_timeout = (struct access_str){timeouts[i].sent, strlen(timeouts[i].sent)};
        char want[64];
        snprintf(want, sizeof(want), "\"grpc_timeout_ms\":%s,", timeouts[i].ms);
        assert_non_null(strstr(line_of(&cfg, &r), want));
    }
}

/* Lines take a fast path (eight bytes at a time) for values with room;
 * access_log_json_str the careful one. Both must agree on every string:
 * hostile bytes at every offset around the 8-byte words. */
static void the_fast_and_careful_escapers_agree(void **state)
{
    (void)state;
    static const char *const pieces[] = {"a",    "\"",       "\\",           "\x01",
                                         "\x7f", "\xc3\xa9", "\xff",         "\xe2\x82\xac",
                                         "\n",   "\xc3",     "\xed\xa0\x80", "\xf0\x9f\x98\x80",
                                         "/",    "Z",        "\x00"};
    struct gr_access_log_cfg cfg = {.set = true, .path = "x", .format = ACCESS_LOG_JSON};
    struct access_fmt *f = access_fmt_new(&cfg);
    assert_non_null(f);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    static char line[ACCESS_LOG_LINE_MAX];
    char in[256], want[2048];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0, target = (size_t)(iter % 41);
        while (n < target) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            /* Mostly plain bytes, as real values are, with hostile ones between. */
            const char *p = (rng >> 32) % 3 ? "a" : pieces[(rng >> 8) % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t k = p[0] == '\0' ? 1 : strlen(p);
            if (n + k > target)
                break;
            memcpy(in + n, p, k);
            n += k;
        }
        struct access_record r = sample();
        r.path = (struct access_str){in, n};
        size_t len = access_fmt_line(f, &r, line, sizeof(line));
        size_t wn = access_log_json_str(want, sizeof(want), in, n);
        const char *v = memmem(line, len, "\"path\":", 7);
        assert_non_null(v);
        v += 7;
        assert_true(v + wn < line + len);
        assert_memory_equal(v, want, wn);
        assert_memory_equal(v + wn, ",\"grpc_code\":", 13);
    }
    access_fmt_free(f);
}

static void a_huge_hostile_path_is_cut_not_overflowing(void **state)
{
    (void)state;
    struct gr_access_log_cfg cfg = {.set = true, .path = "x", .format = ACCESS_LOG_JSON};
    size_t big = 100 * 1024;
    char *path = malloc(big);
    assert_non_null(path);
    for (size_t i = 0; i < big; i++) /* each byte expands: quotes, controls, invalid UTF-8 */
        path[i] = "\"\x01\xff\\"[i % 4];
    struct access_record r = sample();
    r.path = (struct access_str){path, big};
    r.user_agent = (struct access_str){path, big};
    r.grpc_message = (struct access_str){path, big};
    r.authority = (struct access_str){path, big};
    r.request_id = (struct access_str){path, big};
    char *l = line_of(&cfg, &r);
    size_t n = strlen(l);
    assert_true(n < ACCESS_LOG_LINE_MAX);
    /* Still one complete object: every field there, the cut ones marked. */
    assert_memory_equal(l + n - 2, "}\n", 2);
    assert_non_null(strstr(l, "...\",\"grpc_code\":\"UNAVAILABLE\""));
    assert_non_null(strstr(l, "\"peer\":\"127.0.0.1:40000\"}"));
    const char *p = strstr(l, "\"path\":\"");
    const char *e = strstr(l, "\",\"grpc_code\"");
    assert_true(p != NULL && e != NULL && e - p < 2100);
    assert_true(valid_utf8((const unsigned char *)l, n));
    for (size_t i = 0; i < n - 1; i++) /* no raw control byte: one line */
        assert_true((unsigned char)l[i] >= 0x20);
    free(path);
}

static void text_template_operators(void **state)
{
    (void)state;
    struct gr_access_log_cfg cfg = {
        .set = true,
        .path = "x",
        .format = ACCESS_LOG_TEXT,
        .template_text = "%START_TIME% %GRPC_CODE% %PATH% 100%% \"%USER_AGENT%\" up=%UPSTREAM% "
                         "t=%GRPC_TIMEOUT_MS% d=%DURATION_MS% %HTTP_STATUS% %ATTEMPTS% %REQUEST_ID% %PEER%|"
                         "%LISTENER%|%PROTOCOL%|%AUTHORITY%|%GRPC_MESSAGE%|%ROUTE%|%CLUSTER%|%REQUEST_BYTES%|"
                         "%RESPONSE_BYTES%%%",
    };
    struct access_record r = sample();
    assert_string_equal(line_of(&cfg, &r),
                        "2026-12-01T18:04:30.123Z UNAVAILABLE /helloworld.Greeter/SayHello 100% \"grpc-python/1.51\" "
                        "up=127.0.0.1:50051 t=1.500 d=12.500 200 2 0f8b4c9e-2b1d-4c4e-9a57-3f0e2d1c0b9a "
                        "127.0.0.1:40000|ingress|h2|api.example.com|no healthy endpoint|default/0|backend|17|0%\n");
    /* Absent values are "-"; control bytes and backslashes cannot forge a line. */
    r.upstream = NULL;
    r.grpc_code = -1;
    r.grpc_timeout = (struct access_str){NULL, 0};
    r.path = STR("/a\nb\\c");
    cfg.template_text = "%GRPC_CODE% %UPSTREAM% %GRPC_TIMEOUT_MS% %PATH%";
    assert_string_equal(line_of(&cfg, &r), "- - - /a\\x0ab\\x5cc\n");
    cfg.template_text = "no operators at all";
    assert_string_equal(line_of(&cfg, &r), "no operators at all\n");
    /* A template that repeats a long field is cut to one line of the maximum. */
    char *big = malloc(50 * 1024);
    assert_non_null(big);
    memset(big, 'p', 50 * 1024);
    r.path = (struct access_str){big, 50 * 1024};
    cfg.template_text = "%PATH%%PATH%%PATH%%PATH%%PATH%%PATH%";
    char *l = line_of(&cfg, &r);
    assert_int_equal(strlen(l), ACCESS_LOG_LINE_MAX);
    free(big);
}

static void unknown_operators_are_refused(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(access_log_template_check("%START_TIME% %GRPC_CODE% %% x", err, sizeof(err)), GR_OK);
    assert_int_equal(access_log_template_check("%START_TIME% %NOPE% x", err, sizeof(err)), GR_ERR_CONFIG);
    assert_non_null(strstr(err, "unknown operator %NOPE% at offset 13"));
    assert_int_equal(access_log_template_check("%path%", err, sizeof(err)), GR_ERR_CONFIG); /* upper case */
    assert_int_equal(access_log_template_check("%TIME%", err, sizeof(err)), GR_ERR_CONFIG); /* %START_TIME% */
    assert_int_equal(access_log_template_check("100%", err, sizeof(err)), GR_ERR_CONFIG);
    assert_non_null(strstr(err, "offset 3 opens no operator"));
    /* At load: the file, line and column of the template. */
    static const char yaml[] = "listeners:\n"
                               "  - name: ingress\n"
                               "    address: 127.0.0.1:8080\n"
                               "    virtual_hosts:\n"
                               "      - name: default\n"
                               "        domains: [\"*\"]\n"
                               "        routes:\n"
                               "          - match: { prefix: \"/\" }\n"
                               "            cluster: backend\n"
                               "clusters:\n"
                               "  - name: backend\n"
                               "    endpoints: [{ address: 127.0.0.1:50051 }]\n"
                               "access_log:\n"
                               "  path: /dev/stdout\n"
                               "  format: text\n"
                               "  template: \"%START_TIME% %GRPC_CODES%\"\n";
    struct gr_config *c = config_load_buffer("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "t.yaml:16:13: access_log: template: unknown operator %GRPC_CODES%"));
}

/* access_log.buffer: a size within [64 KiB, 256 MiB]; ACCESS_LOG_BUFFER_DEFAULT when not written. */
static void the_buffer_key_is_a_bounded_size(void **state)
{
    (void)state;
#define ALOG_HEAD                                                                                                      \
    "listeners:\n  - name: ingress\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: default\n"          \
    "        domains: [\"*\"]\n        routes:\n          - match: { prefix: \"/\" }\n            cluster: backend\n"  \
    "clusters:\n  - name: backend\n    endpoints: [{ address: 127.0.0.1:50051 }]\naccess_log:\n  path: /dev/stdout\n"
    static const struct {
        const char *value; /* what buffer: says */
        uint32_t bytes;    /* what it loads as; 0: an error */
        const char *err;   /* the whole message then */
    } cases[] = {
        {"4MiB", 4u << 20, NULL},
        {"65536", ACCESS_LOG_BUFFER_MIN, NULL},
        {"256MiB", ACCESS_LOG_BUFFER_MAX, NULL},
        {"64KiB", 64u << 10, NULL},
        {"65535", 0, "t.yaml:15:11: 'buffer' must be between 65536 and 268435456, got '65535'"},
        {"257MiB", 0, "t.yaml:15:11: 'buffer' must be between 65536 and 268435456, got '257MiB'"},
        {"0", 0, "t.yaml:15:11: 'buffer' must be between 65536 and 268435456, got '0'"},
        {"lots", 0, "t.yaml:15:11: 'buffer' must be a size such as 65536, 64KiB or 1MiB, got 'lots'"},
        {"[1]", 0, "t.yaml:15:11: 'buffer' must be a scalar, got a list"},
    };
    char yaml[1024], err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(yaml, sizeof(yaml), ALOG_HEAD "  buffer: %s\n", cases[i].value);
        err[0] = '\0';
        struct gr_config *c = config_load_buffer("t.yaml", yaml, strlen(yaml), err, sizeof(err));
        if (cases[i].err == NULL) {
            assert_non_null(c);
            assert_int_equal(c->access_log.buffer, cases[i].bytes);
            config_unref(c);
        } else {
            assert_null(c);
            assert_string_equal(err, cases[i].err);
        }
    }
    struct gr_config *c = config_load_buffer("t.yaml", ALOG_HEAD, strlen(ALOG_HEAD), err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->access_log.buffer, ACCESS_LOG_BUFFER_DEFAULT); /* not written */
    config_unref(c);
#undef ALOG_HEAD
}

/* ---- The writer thread. ---- */

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += *s == c;
    return n;
}

/* Waits until path holds needle, 10 s at most (the writer passes every 25 ms). */
static bool wait_for(const char *path, const char *needle)
{
    for (int i = 0; i < 1000; i++) {
        const char *s = read_all(path);
        if (s != NULL && strstr(s, needle) != NULL)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

static void log_path(struct access_log_shard *sh, const char *p)
{
    struct access_record r = sample();
    r.path = (struct access_str){p, strlen(p)};
    access_log_write(sh, &r);
}

static void reopen_after_rename_writes_to_the_new_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/grelay-alog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], rotated[128];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    struct gr_access_log_cfg cfg = {.set = true, .path = path, .format = ACCESS_LOG_JSON};
    char err[256];
    assert_int_equal(access_log_start(&cfg, err, sizeof(err)), GR_OK);
    assert_true(access_log_on());
    struct access_log_shard *sh = access_log_shard_new(0);
    assert_non_null(sh);
    log_path(sh, "/first");
    assert_true(wait_for(path, "/first"));
    assert_int_equal(rename(path, rotated), 0);
    access_log_reopen();
    log_path(sh, "/second");
    assert_true(wait_for(path, "/second"));
    log_path(sh, "/third");
    access_log_shard_free(sh); /* the writer flushes it first */
    access_log_stop();
    assert_false(access_log_on());
    char *s = read_all(rotated);
    assert_int_equal(count_char(s, '\n'), 1);
    assert_non_null(strstr(s, "\"path\":\"/first\""));
    s = read_all(path);
    assert_int_equal(count_char(s, '\n'), 2);
    assert_non_null(strstr(s, "\"path\":\"/second\""));
    assert_non_null(strstr(s, "\"path\":\"/third\""));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t mask = umask(022);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0644 & ~mask);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
}

static void reconfigure_changes_file_and_format(void **state)
{
    (void)state;
    char dir[] = "/tmp/grelay-alog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char a[128], b[128];
    snprintf(a, sizeof(a), "%s/a.log", dir);
    snprintf(b, sizeof(b), "%s/b.log", dir);
    struct gr_access_log_cfg cfg = {.set = true, .path = a, .format = ACCESS_LOG_JSON};
    char err[256];
    assert_int_equal(access_log_start(&cfg, err, sizeof(err)), GR_OK);
    struct access_log_shard *sh = access_log_shard_new(3);
    log_path(sh, "/json");
    assert_true(wait_for(a, "/json"));
    /* A file that cannot be opened changes nothing. */
    struct gr_access_log_cfg bad = {
        .set = true, .path = "/nonexistent-dir/x.log", .format = ACCESS_LOG_TEXT, .template_text = "%PATH%"};
    assert_int_equal(access_log_reconfigure(&bad, err, sizeof(err)), GR_ERR_CONFIG);
    assert_non_null(strstr(err, "cannot open /nonexistent-dir/x.log"));
    log_path(sh, "/json2");
    assert_true(wait_for(a, "/json2"));
    struct gr_access_log_cfg text = {.set = true, .path = b, .format = ACCESS_LOG_TEXT, .template_text = "T %PATH%"};
    assert_int_equal(access_log_reconfigure(&text, err, sizeof(err)), GR_OK);
    log_path(sh, "/text");
    assert_true(wait_for(b, "T /text\n"));
    /* Turned off: nothing wanted any more. */
    struct gr_access_log_cfg off = {0};
    assert_int_equal(access_log_reconfigure(&off, err, sizeof(err)), GR_OK);
    assert_false(access_log_on());
    access_log_shard_free(sh);
    access_log_stop();
    char *s = read_all(a);
    assert_int_equal(count_char(s, '\n'), 2);
    assert_int_equal(count_char(s, '{'), 2);
    assert_string_equal(read_all(b), "T /text\n");
    unlink(a);
    unlink(b);
    rmdir(dir);
}

/* Reads a pipe to its end. */
struct reader {
    int fd;                /* the read end */
    char *data;            /* what was read (4 MiB at most) */
    size_t len;            /* its bytes */
    _Atomic size_t so_far; /* newlines read so far */
    size_t lines;          /* newlines read, at the end */
};

static void *read_pipe(void *arg)
{
    struct reader *rd = arg;
    ssize_t n;
    while (rd->len < 4 << 20 && (n = read(rd->fd, rd->data + rd->len, (4 << 20) - rd->len)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            rd->lines += rd->data[rd->len + (size_t)i] == '\n';
        rd->len += (size_t)n;
        rd->so_far = rd->lines;
    }
    return NULL;
}

static void a_full_ring_drops_and_counts(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", p[1]);
    struct gr_access_log_cfg cfg = {
        .set = true, .path = path, .format = ACCESS_LOG_JSON, .buffer = ACCESS_LOG_BUFFER_MIN};
    char err[256];
    uint64_t lines0 = access_log_lines(), dropped0 = access_log_dropped();
    assert_int_equal(access_log_start(&cfg, err, sizeof(err)), GR_OK);
    struct access_log_shard *sh = access_log_shard_new(1);
    assert_non_null(sh);
    /* Nobody reads the pipe: the writer blocks once it is full (64 KiB),
     * the ring (64 KiB, the least buffer) fills, and then lines are
     * dropped while the worker goes on. Bounded: ~300 lines fill both. */
    uint64_t tries = 0;
    while (access_log_dropped() == dropped0 && tries < 100000) {
        log_path(sh, "/fill");
        tries++;
    }
    for (int i = 0; i < 100; i++, tries++)
        log_path(sh, "/more");
    uint64_t lines = access_log_lines() - lines0, dropped = access_log_dropped() - dropped0;
    assert_true(dropped >= 100);
    assert_true(lines >= ACCESS_LOG_BUFFER_MIN / ACCESS_LOG_LINE_MAX);
    assert_int_equal(lines + dropped, tries);
    /* Now read: stop flushes every buffered line, and only those. */
    struct reader rd = {.fd = p[0], .data = malloc(4 << 20)};
    assert_non_null(rd.data);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_pipe, &rd), 0);
    /* Once the reader has it all, the ring is empty: more lines fit, and
     * they go round its end. */
    for (int i = 0; i < 1000 && rd.so_far < lines; i++)
        usleep(10 * 1000);
    assert_int_equal(rd.so_far, lines);
    for (int i = 0; i < 100; i++)
        log_path(sh, "/after");
    lines += 100;
    assert_int_equal(access_log_dropped() - dropped0, dropped);
    access_log_shard_free(sh);
    access_log_stop();
    close(p[1]); /* the writer's copy is closed: the reader sees the end */
    pthread_join(t, NULL);
    close(p[0]);
    assert_int_equal(rd.lines, lines);
    /* Whole lines, in order, across the ring's wrap: each one a JSON object of its own. */
    for (size_t at = 0; at < rd.len;) {
        const char *nl = memchr(rd.data + at, '\n', rd.len - at);
        assert_non_null(nl);
        assert_memory_equal(rd.data + at, "{\"time\":\"2026-12-01T18:04:30.123Z\",", 35);
        assert_memory_equal(nl - 25, "\"peer\":\"127.0.0.1:40000\"}", 25);
        at = (size_t)(nl - rd.data) + 1;
    }
    assert_true(rd.len > ACCESS_LOG_BUFFER_MIN); /* the ring went round */
    free(rd.data);
    assert_int_equal(access_log_lines() - lines0, lines);
    assert_int_equal(access_log_dropped() - dropped0, dropped);
}

static void nothing_configured_starts_nothing(void **state)
{
    (void)state;
    struct gr_access_log_cfg off = {0};
    char err[64];
    assert_int_equal(access_log_start(&off, err, sizeof(err)), GR_OK);
    assert_false(access_log_on());
    struct access_log_shard *sh = access_log_shard_new(0);
    uint64_t lines0 = access_log_lines();
    log_path(sh, "/nowhere"); /* no formatter: nothing buffered */
    assert_int_equal(access_log_lines(), lines0);
    access_log_write(NULL, &(struct access_record){0});
    access_log_shard_free(sh);
    access_log_stop();
    struct gr_access_log_cfg bad = {.set = true, .path = "/nonexistent-dir/x.log"};
    assert_int_equal(access_log_start(&bad, err, sizeof(err)), GR_ERR_CONFIG);
    assert_false(access_log_on());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_escapes_hostile_strings),
        cmocka_unit_test(json_strings_are_cut_within_their_room),
        cmocka_unit_test(time_is_rfc3339_utc_with_milliseconds),
        cmocka_unit_test(json_line_has_every_field),
        cmocka_unit_test(the_fast_and_careful_escapers_agree),
        cmocka_unit_test(a_huge_hostile_path_is_cut_not_overflowing),
        cmocka_unit_test(text_template_operators),
        cmocka_unit_test(unknown_operators_are_refused),
        cmocka_unit_test(the_buffer_key_is_a_bounded_size),
        cmocka_unit_test(reopen_after_rename_writes_to_the_new_file),
        cmocka_unit_test(reconfigure_changes_file_and_format),
        cmocka_unit_test(a_full_ring_drops_and_counts),
        cmocka_unit_test(nothing_configured_starts_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
