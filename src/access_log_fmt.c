/* Access log lines: a finished call's record as one JSON object or one
 * line of a text template (access_log.h). Runs on the workers: bounded
 * output into the caller's buffer, no allocation, no lock, no syscall
 * (the time is formatted here, not by gmtime_r, which takes glibc's
 * time zone lock). */
#include "grelay/access_log.h"
#include "grelay/common.h"
#include "grelay/grpc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fields of a line, in the JSON object's order: the name of its
 * enum fld, its JSON key, its template operator, and the most bytes its
 * value may take in a line (escapes and quotes included). The caps add up
 * to well under ACCESS_LOG_LINE_MAX, so a JSON line is never cut. */
#define ACCESS_FIELDS(X)                                                                                               \
    X(TIME, "time", "START_TIME", 32)                                                                                  \
    X(DURATION_MS, "duration_ms", "DURATION_MS", 32)                                                                   \
    X(LISTENER, "listener", "LISTENER", 160)                                                                           \
    X(PROTOCOL, "protocol", "PROTOCOL", 32)                                                                            \
    X(AUTHORITY, "authority", "AUTHORITY", 300)                                                                        \
    X(PATH, "path", "PATH", 2048)                                                                                      \
    X(GRPC_CODE, "grpc_code", "GRPC_CODE", 32)                                                                         \
    X(GRPC_MESSAGE, "grpc_message", "GRPC_MESSAGE", 1024)                                                              \
    X(HTTP_STATUS, "http_status", "HTTP_STATUS", 16)                                                                   \
    X(ROUTE, "route", "ROUTE", 300)                                                                                    \
    X(CLUSTER, "cluster", "CLUSTER", 160)                                                                              \
    X(UPSTREAM, "upstream", "UPSTREAM", 300)                                                                           \
    X(ATTEMPTS, "attempts", "ATTEMPTS", 16)                                                                            \
    X(REQUEST_BYTES, "request_bytes", "REQUEST_BYTES", 24)                                                             \
    X(RESPONSE_BYTES, "response_bytes", "RESPONSE_BYTES", 24)                                                          \
    X(GRPC_TIMEOUT_MS, "grpc_timeout_ms", "GRPC_TIMEOUT_MS", 32)                                                       \
    X(REQUEST_ID, "request_id", "REQUEST_ID", 300)                                                                     \
    X(USER_AGENT, "user_agent", "USER_AGENT", 512)                                                                     \
    X(PEER, "peer", "PEER", 80)

#define AS_ENUM(id, key, op, cap) FLD_##id,
enum fld { ACCESS_FIELDS(AS_ENUM) FLD_COUNT };

/* The template operators and caps, by enum fld. */
#define AS_ROW(id, key, op, cap) [FLD_##id] = {op, cap},
static const struct {
    const char *op; /* template operator, without the percent signs */
    size_t cap;     /* bytes of the value at most */
} fields[FLD_COUNT] = {ACCESS_FIELDS(AS_ROW)};

/* One piece of a text template. */
struct af_op {
    int field;      /* an enum fld, or -1: the literal below */
    size_t lit_off; /* the literal's first byte in access_fmt.text */
    size_t lit_len; /* its bytes ("%%" is a literal "%") */
};

struct access_fmt {
    enum access_log_format format; /* json or text */
    char *text;                    /* the template (text), owned; or NULL */
    struct af_op *ops;             /* the template, parsed; owned */
    size_t n_ops;                  /* entries of ops */
};

/* ---- Bounded output. ---- */

/* Where a line is being written: never past cap. */
struct lbuf {
    char *p;    /* the caller's buffer */
    size_t len; /* bytes written */
    size_t cap; /* bytes that may be written */
};

/* Inlined: a literal's constant size becomes a few stores. */
static inline void put(struct lbuf *b, const char *s, size_t n)
{
    if (gr_likely(n <= b->cap - b->len)) {
        memcpy(b->p + b->len, s, n); /* the constant n stays constant here */
        b->len += n;
    } else {
        memcpy(b->p + b->len, s, b->cap - b->len);
        b->len = b->cap;
    }
}

static void put_str(struct lbuf *b, const char *s) { put(b, s, strlen(s)); }

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
        hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing past U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

static const char hexd[] = "0123456789abcdef";

/* The escape of one character at s into esc (at most 6 bytes); sets *used
 * to the input bytes it stands for. JSON when json, else text: control
 * bytes and backslashes as \xHH, everything else as is. */
static size_t escape_one(const unsigned char *s, size_t n, bool json, char *esc, size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (!json) {
        if (c >= 0x20 && c != 0x7f && c != '\\') {
            esc[0] = (char)c;
            return 1;
        }
        esc[0] = '\\', esc[1] = 'x', esc[2] = hexd[c >> 4], esc[3] = hexd[c & 15];
        return 4;
    }
    if (c == '"' || c == '\\') {
        esc[0] = '\\', esc[1] = (char)c;
        return 2;
    }
    if (c >= 0x20 && c < 0x80) {
        esc[0] = (char)c;
        return 1;
    }
    const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
    if (named != NULL) {
        memcpy(esc, named, 2);
        return 2;
    }
    size_t u = c >= 0x80 ? utf8_len(s, n) : 0;
    if (u > 0) {
        memcpy(esc, s, u);
        *used = u;
        return u;
    }
    memcpy(esc, "\\u00", 4); /* a control byte, or a byte that is not UTF-8 */
    esc[4] = hexd[c >> 4], esc[5] = hexd[c & 15];
    return 6;
}

/* Whether the escapes of s (n bytes) take at most room bytes. */
static bool fits(const unsigned char *s, size_t n, bool json, size_t room)
{
    char esc[8];
    for (size_t i = 0, used; i < n; i += used) {
        size_t k = escape_one(s + i, n - i, json, esc, &used);
        if (k > room)
            return false;
        room -= k;
    }
    return true;
}

/* The length of the run at s (n bytes) that needs no escape: for JSON
 * printable ASCII but '"' and '\\'; for text every byte from 0x20 but DEL
 * and '\\'. JSON is scanned eight bytes at a time: a byte below 0x20, from
 * 0x80, or a quote or backslash sets its high bit in bad (a borrow can
 * flag bytes above a flagged one, never below, so the lowest is exact). */
/* Bytes copied as they are: bit 1 in JSON strings (printable ASCII but
 * '"' and '\\'), bit 2 in text lines (from 0x20, but DEL and '\\'). */
static const uint8_t plain_byte[256] = {
    [0x20 ... 0x21] = 3, [0x23 ... 0x5b] = 3, [0x22] = 2, [0x5d ... 0x7e] = 3, [0x7f] = 1, [0x80 ... 0xff] = 2,
};

#define ONES 0x0101010101010101ull
static inline uint64_t json_bad(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), bs = x ^ (ONES * '\\');
    return (x | (x - ONES * 0x20) | (q - ONES) | (bs - ONES)) & (ONES * 0x80);
}

/* The last n - i bytes of s (fewer than 8, n at least 8) in the low bytes
 * of a word, the rest plain: one load that stays inside s. */
static inline uint64_t last_word(const unsigned char *s, size_t i, size_t n)
{
    uint64_t w;
    memcpy(&w, s + n - 8, 8);
    size_t r = n - i;
    return (w >> (8 * (8 - r))) | ((ONES * 'a') << (8 * r));
}

static size_t plain_run(const unsigned char *s, size_t n, bool json)
{
    size_t i = 0;
    if (json && n >= 8) {
        for (; i + 8 <= n; i += 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            uint64_t bad = json_bad(x);
            if (bad != 0)
                return i + (size_t)__builtin_ctzll(bad) / 8; /* little-endian: the lowest byte comes first */
        }
        if (i < n) {
            uint64_t bad = json_bad(last_word(s, i, n));
            size_t k = bad ? (size_t)__builtin_ctzll(bad) / 8 : 8;
            i += k < n - i ? k : n - i;
        }
        return i;
    }
    unsigned bit = json ? 1 : 2;
    while (i < n && (plain_byte[s[i]] & bit))
        i++;
    return i;
}

/* s (n bytes) escaped as JSON at d, which has room for 6 * n + 8 bytes
 * (the most escapes can take, and a word): plain bytes go eight at a time, word stores
 * running ahead into that room. Returns the bytes written. */
static inline __attribute__((always_inline)) size_t json_copy(char *d, const unsigned char *s, size_t n)
{
    char *start = d;
    size_t i = 0;
    while (i < n) {
        for (; i + 8 <= n; i += 8, d += 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            memcpy(d, &x, 8);
            uint64_t bad = json_bad(x);
            if (bad != 0) {
                size_t k = (size_t)__builtin_ctzll(bad) / 8;
                i += k;
                d += k;
                break;
            }
        }
        if (i < n && n - i < 8 && n >= 8) { /* the last bytes: one word too */
            uint64_t x = last_word(s, i, n);
            memcpy(d, &x, 8);
            uint64_t bad = json_bad(x);
            size_t k = bad ? (size_t)__builtin_ctzll(bad) / 8 : 8;
            k = k < n - i ? k : n - i;
            i += k;
            d += k;
        }
        while (i < n && (plain_byte[s[i]] & 1)) /* short strings */
            *d++ = (char)s[i++];
        if (i < n) {
            size_t used;
            d += escape_one(s + i, n - i, true, d, &used);
            i += used;
        }
    }
    return (size_t)(d - start);
}

/* Appends s escaped, in quotes for JSON, taking at most cap bytes: a
 * longer value is cut at a character and ends with "...". Runs that need
 * no escape are copied whole; a value short enough that even six bytes a
 * byte would fit (most) is checked for room only once. */
static void put_escaped(struct lbuf *b, const char *s, size_t n, bool json, size_t cap)
{
    if (cap > b->cap - b->len)
        cap = b->cap - b->len;
    if (cap < (json ? 5u : 3u))
        return;
    size_t end = b->len + cap - (json ? 1 : 0); /* where the value's bytes stop: the closing quote fits */
    const unsigned char *u = (const unsigned char *)s;
    if (json)
        b->p[b->len++] = '"';
    bool room_for_all = n <= (end - b->len) / 6;
    for (size_t i = 0; i < n;) {
        char esc[8];
        size_t used = plain_run(u + i, n - i, json), k = used;
        const char *src = s + i;
        if (used == 0) {
            k = escape_one(u + i, n - i, json, esc, &used);
            src = esc;
        }
        /* Room for this piece and, unless it is the last, for "..." (the
         * previous piece left room for "..." at least). */
        if (!room_for_all && b->len + k + (i + used < n ? 3 : 0) > end) {
            room_for_all = fits(u + i, n - i, json, end - b->len);
            if (!room_for_all) {
                size_t room = end - b->len - 3;
                if (src != esc) { /* a plain run: cut anywhere */
                    memcpy(b->p + b->len, src, room);
                    b->len += room;
                }
                memcpy(b->p + b->len, "...", 3);
                b->len += 3;
                break;
            }
        }
        memcpy(b->p + b->len, src, k);
        b->len += k;
        i += used;
    }
    if (json)
        b->p[b->len++] = '"';
}

size_t access_log_json_str(char *out, size_t cap, const char *s, size_t n)
{
    struct lbuf b = {.p = out, .len = 0, .cap = cap};
    put_escaped(&b, s, n, true, cap);
    return b.len;
}

/* ---- Values. ---- */

/* "00" to "99". */
static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                     "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

static size_t fmt_u64(uint64_t v, char *out)
{
    if (v < 100) { /* most: a status digit pair, attempts, a timeout's seconds */
        if (v < 10) {
            out[0] = (char)('0' + v);
            return 1;
        }
        memcpy(out, digit_pairs + 2 * v, 2);
        return 2;
    }
    static const uint64_t pow10[20] = {1ull,
                                       1ull * 10,
                                       1ull * 100,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};
    size_t n = 3; /* v >= 100 */
    while (n < 20 && v >= pow10[n])
        n++;
    size_t i = n;
    for (; v >= 100; v /= 100) { /* two digits a division */
        i -= 2;
        memcpy(out + i, digit_pairs + 2 * (v % 100), 2);
    }
    if (v >= 10)
        memcpy(out + i - 2, digit_pairs + 2 * v, 2);
    else
        out[i - 1] = (char)('0' + v);
    return n;
}

/* Thousandths as "123.456" (a whole number keeps its 3 decimals when always3). */
static size_t fmt_milli(uint64_t thousandths, bool always3, char *out)
{
    size_t n = fmt_u64(thousandths / 1000, out);
    uint64_t frac = thousandths % 1000;
    if (frac == 0 && !always3)
        return n;
    out[n++] = '.';
    out[n++] = (char)('0' + frac / 100);
    out[n++] = (char)('0' + frac / 10 % 10);
    out[n++] = (char)('0' + frac % 10);
    return n;
}

static void two(char *out, unsigned v)
{
    out[0] = (char)('0' + v / 10 % 10);
    out[1] = (char)('0' + v % 10);
}

/* The last second access_log_time formatted on this thread, and its
 * "YYYY-MM-DDTHH:MM:SS" (calls end many to a second). */
static __thread int64_t time_sec = INT64_MIN;
static __thread char time_text[20];

static void civil_time(int64_t secs, char *out);

size_t access_log_time(int64_t ms, char *out)
{
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    unsigned milli = (unsigned)(ms - secs * 1000);
    if (secs != time_sec) {
        civil_time(secs, time_text);
        time_sec = secs;
    }
    memcpy(out, time_text, 19);
    out[19] = '.';
    out[20] = (char)('0' + milli / 100);
    two(out + 21, milli % 100);
    out[23] = 'Z';
    out[24] = '\0';
    return 24;
}

/* secs since the epoch as "YYYY-MM-DDTHH:MM:SS" (19 bytes). */
static void civil_time(int64_t secs, char *out)
{
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    unsigned sod = (unsigned)(secs - days * 86400);
    /* Civil date from days since 1970-01-01 (Howard Hinnant's algorithm). */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    if (y < 0 || y > 9999)
        y = y < 0 ? 0 : 9999; /* not a time a call has */
    unsigned yy = (unsigned)y;
    two(out, yy / 100);
    two(out + 2, yy % 100);
    out[4] = '-';
    two(out + 5, m);
    out[7] = '-';
    two(out + 8, d);
    out[10] = 'T';
    two(out + 11, sod / 3600);
    out[13] = ':';
    two(out + 14, sod / 60 % 60);
    out[16] = ':';
    two(out + 17, sod % 60);
}

/* A value that is absent: null in JSON, "-" in text. */
static void put_none(struct lbuf *b, bool json) { put_str(b, json ? "null" : "-"); }

/* Where n bytes can be written at once, or NULL when the line has no room left. */
static inline char *spot(struct lbuf *b, size_t n) { return b->cap - b->len >= n ? b->p + b->len : NULL; }

static void put_number(struct lbuf *b, uint64_t v)
{
    char num[24], *d = spot(b, sizeof(num));
    size_t n = fmt_u64(v, d ? d : num);
    if (d != NULL)
        b->len += n;
    else
        put(b, num, n);
}

/* Thousandths as fmt_milli writes them. */
static void put_milli(struct lbuf *b, uint64_t thousandths, bool always3)
{
    char num[32], *d = spot(b, sizeof(num));
    size_t n = fmt_milli(thousandths, always3, d ? d : num);
    if (d != NULL)
        b->len += n;
    else
        put(b, num, n);
}

static inline void put_text(struct lbuf *b, const char *s, size_t n, bool json, size_t cap)
{
    if (s == NULL) {
        put_none(b, json);
    } else if (json && 6 * n + 10 <= b->cap - b->len) { /* the common case: no escapes, within cap */
        size_t k = json_copy(b->p + b->len + 1, (const unsigned char *)s, n);
        if (gr_unlikely(k + 2 > cap)) {
            put_escaped(b, s, n, json, cap); /* cut it (what was written is overwritten) */
            return;
        }
        b->p[b->len] = '"';
        b->p[b->len + 1 + k] = '"';
        b->len += k + 2;
    } else {
        put_escaped(b, s, n, json, cap);
    }
}

/* The client's grpc-timeout in milliseconds; false when absent or malformed. */
static bool timeout_ms(const struct access_str *t, uint64_t *us)
{
    return t->p != NULL && grpc_timeout_parse((const uint8_t *)t->p, t->n, us) == GR_OK;
}

static void put_duration(struct lbuf *b, double ms)
{
    /* Thousandths of a millisecond, rounded; nonsense (negative, NaN, past a year) is 0. */
    double th = ms * 1000.0 + 0.5;
    put_milli(b, (isfinite(th) && th >= 0 && th < 3.2e13) ? (uint64_t)th : 0, true);
}

/* Writes field f of r: JSON when json (strings quoted, null when absent),
 * else the text form ("-" when absent). */
static inline __attribute__((always_inline)) void put_field(struct lbuf *b, const struct access_record *r, int f,
                                                            bool json)
{
    char tmp[40];
    size_t cap = fields[f].cap;
    const struct access_str *str = NULL;
    const char *c = NULL; /* a NUL-terminated value */
    char *d;
    uint64_t us;
    switch (f) {
    case FLD_TIME:
        if ((d = spot(b, 40)) != NULL) { /* 24 bytes and quotes, the NUL overwritten next */
            d[0] = '"';
            b->len += access_log_time(r->start_ms, d + json) + json;
            b->p[b->len] = '"';
            b->len += json;
            return;
        }
        if (json)
            put(b, "\"", 1);
        put(b, tmp, access_log_time(r->start_ms, tmp));
        if (json)
            put(b, "\"", 1);
        return;
    case FLD_DURATION_MS: put_duration(b, r->duration_ms); return;
    case FLD_GRPC_CODE:
        if (r->grpc_code < 0) {
            put_none(b, json);
            return;
        }
        c = grpc_status_name((enum grpc_status)r->grpc_code);
        break;
    case FLD_HTTP_STATUS: put_number(b, r->http_status > 0 ? (uint64_t)r->http_status : 0); return;
    case FLD_ATTEMPTS: put_number(b, r->attempts); return;
    case FLD_REQUEST_BYTES: put_number(b, r->request_bytes); return;
    case FLD_RESPONSE_BYTES: put_number(b, r->response_bytes); return;
    case FLD_GRPC_TIMEOUT_MS:
        if (timeout_ms(&r->grpc_timeout, &us))
            put_milli(b, us, false); /* us are thousandths of a ms */
        else
            put_none(b, json);
        return;
    case FLD_LISTENER: c = r->listener; break;
    case FLD_PROTOCOL: c = r->protocol; break;
    case FLD_ROUTE: c = r->route; break;
    case FLD_CLUSTER: c = r->cluster; break;
    case FLD_UPSTREAM: c = r->upstream; break;
    case FLD_PEER: c = r->peer; break;
    case FLD_AUTHORITY: str = &r->authority; break;
    case FLD_PATH: str = &r->path; break;
    case FLD_GRPC_MESSAGE: str = &r->grpc_message; break;
    case FLD_REQUEST_ID: str = &r->request_id; break;
    case FLD_USER_AGENT: str = &r->user_agent; break;
    default: return;
    }
    if (str != NULL)
        put_text(b, str->p, str->n, json, cap);
    else
        put_text(b, c, c ? strlen(c) : 0, json, cap);
}

/* ---- Lines. ---- */

size_t access_fmt_line(const struct access_fmt *f, const struct access_record *r, char *out, size_t cap)
{
    struct lbuf b = {.p = out, .len = 0, .cap = cap - 1}; /* the newline always fits */
    if (f->format == ACCESS_LOG_JSON) {
        b.cap--; /* and the closing brace */
                 /* Straight-line code: each put_field folds to its own case. */
#define AS_JSON(id, key, op, cap)                                                                                      \
    put(&b, ",\"" key "\":", sizeof(",\"" key "\":") - 1);                                                             \
    put_field(&b, r, FLD_##id, true);
        ACCESS_FIELDS(AS_JSON)
        b.p[0] = '{'; /* the first field's ',' */
        b.p[b.len++] = '}';
    } else {
        for (size_t i = 0; i < f->n_ops; i++) {
            const struct af_op *op = &f->ops[i];
            if (op->field < 0)
                put(&b, f->text + op->lit_off, op->lit_len);
            else
                put_field(&b, r, op->field, false);
        }
    }
    b.p[b.len++] = '\n';
    return b.len;
}

/* ---- Templates. ---- */

/* The field an operator names (n bytes at s), or -1. */
static int op_field(const char *s, size_t n)
{
    for (int i = 0; i < FLD_COUNT; i++)
        if (strlen(fields[i].op) == n && memcmp(fields[i].op, s, n) == 0)
            return i;
    return -1;
}

/* Walks tmpl: each piece goes to ops (when not NULL) and is counted in
 * *n. Returns GR_OK, or GR_ERR_CONFIG with the error in err. */
static int parse_template(const char *tmpl, struct af_op *ops, size_t *n, char *err, size_t errlen)
{
    size_t count = 0, i = 0, len = strlen(tmpl);
    while (i < len) {
        struct af_op op = {.field = -1, .lit_off = i};
        size_t next;          /* where the next piece starts */
        if (tmpl[i] != '%') { /* a literal up to the next '%' */
            const char *pct = memchr(tmpl + i, '%', len - i);
            next = pct ? (size_t)(pct - tmpl) : len;
            op.lit_len = next - i;
        } else if (tmpl[i + 1] == '%') { /* "%%": one '%' */
            op.lit_len = 1;
            next = i + 2;
        } else {
            const char *close = memchr(tmpl + i + 1, '%', len - i - 1);
            if (close == NULL) {
                snprintf(err, errlen, "'%%' at offset %zu opens no operator (write %%%% for a percent sign)", i);
                return GR_ERR_CONFIG;
            }
            size_t oplen = (size_t)(close - tmpl) - i - 1;
            op.field = op_field(tmpl + i + 1, oplen);
            if (op.field < 0) {
                snprintf(err, errlen,
                         "unknown operator %%%.*s%% at offset %zu (the operators are the JSON keys in upper case, "
                         "%%START_TIME%% for time, and %%%%; docs/access-log.md)",
                         (int)(oplen > 64 ? 64 : oplen), tmpl + i + 1, i);
                return GR_ERR_CONFIG;
            }
            next = (size_t)(close - tmpl) + 1;
        }
        if (ops != NULL)
            ops[count] = op;
        count++;
        i = next;
    }
    *n = count;
    return GR_OK;
}

int access_log_template_check(const char *tmpl, char *err, size_t errlen)
{
    size_t n;
    return parse_template(tmpl, NULL, &n, err, errlen);
}

struct access_fmt *access_fmt_new(const struct gr_access_log_cfg *cfg)
{
    struct access_fmt *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->format = cfg->format;
    if (cfg->format != ACCESS_LOG_TEXT)
        return f;
    char err[256];
    size_t n = 0;
    f->text = strdup(cfg->template_text ? cfg->template_text : "");
    if (f->text == NULL || parse_template(f->text, NULL, &n, err, sizeof(err)) != GR_OK ||
        (f->ops = calloc(n ? n : 1, sizeof(*f->ops))) == NULL) {
        access_fmt_free(f);
        return NULL;
    }
    (void)parse_template(f->text, f->ops, &f->n_ops, err, sizeof(err));
    return f;
}

void access_fmt_free(struct access_fmt *f)
{
    if (f == NULL)
        return;
    free(f->text);
    free(f->ops);
    free(f);
}
