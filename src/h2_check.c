/* grelay's own HTTP messaging checks of upstream responses and of client
 * requests (see include/grelay/h2_check.h). */
#include "grelay/h2_check.h"

#include <string.h>

/* What a byte in a field name is (RFC 9110 tchar, lower case only, RFC
 * 9113 8.2.1): 1 good, 2 an upper-case letter, 0 any other. XOR-ed with 1
 * and OR-ed over a name, NAME_BAD and NAME_UPPER say what it holds. */
#define NAME_BAD 1
#define NAME_UPPER 2
static const uint8_t name_chars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1,  ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,
    ['z'] = 1, ['A'] = 2, ['B'] = 2, ['C'] = 2, ['D'] = 2, ['E'] = 2,  ['F'] = 2, ['G'] = 2, ['H'] = 2, ['I'] = 2,
    ['J'] = 2, ['K'] = 2, ['L'] = 2, ['M'] = 2, ['N'] = 2, ['O'] = 2,  ['P'] = 2, ['Q'] = 2, ['R'] = 2, ['S'] = 2,
    ['T'] = 2, ['U'] = 2, ['V'] = 2, ['W'] = 2, ['X'] = 2, ['Y'] = 2,  ['Z'] = 2,
};

void h2_check_init(struct h2_check *c, bool head)
{
    memset(c, 0, sizeof(*c));
    c->content_length = -1;
    c->head = head;
}

/* NAME_BAD and NAME_UPPER as the name holds them (an empty name is bad). */
static unsigned name_fault(const uint8_t *p, size_t n)
{
    unsigned acc = n == 0 ? NAME_BAD : 0;
    for (size_t i = 0; i < n; i++)
        acc |= name_chars[p[i]] ^ 1u;
    return acc;
}

/* The names gRPC answers and requests carry (te aside: it has its own
 * check), good by construction: compared whole (a
 * few word compares) instead of scanned byte by byte. */
static bool common_name(const uint8_t *p, size_t n)
{
    switch (n) {
    case 10: return memcmp(p, "user-agent", 10) == 0;
    case 11: return memcmp(p, "grpc-status", 11) == 0;
    case 12:
        return memcmp(p, "content-type", 12) == 0 || memcmp(p, "grpc-message", 12) == 0 ||
               memcmp(p, "grpc-timeout", 12) == 0;
    case 13: return memcmp(p, "grpc-encoding", 13) == 0;
    case 14: return memcmp(p, "content-length", 14) == 0;
    case 20: return memcmp(p, "grpc-accept-encoding", 20) == 0;
    default: return false;
    }
}

/* Eight bytes with a byte below 0x20 or equal to 0x7f (and some false
 * alarms after such a byte, from the borrow), bytes of 0x80 and above
 * being good (obs-text). */
static inline uint64_t ctl_bytes(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t del = w ^ (0x7f * ones);
    return ((w - 0x20 * ones) | (del - ones)) & ~w & high;
}

/* RFC 9110 field-value with RFC 9113 8.2.1: no NUL, CR, LF or other
 * control character but HTAB, no DEL, no SP or HTAB first or last.
 * Eight bytes at a time; the byte loop only where one looks wrong (a
 * HTAB, or a real fault). */
static bool value_ok(const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    if (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t')
        return false;
    uint64_t alarm = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        alarm |= ctl_bytes(w);
    }
    if (n >= 8) {
        uint64_t w; /* the last eight bytes, some of them again */
        memcpy(&w, p + n - 8, 8);
        alarm |= i < n ? ctl_bytes(w) : 0;
    } else if (n >= 4) {
        uint32_t a, b; /* the first and the last four bytes, overlapping */
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        alarm |= ctl_bytes((uint64_t)a | (uint64_t)b << 32);
    } else {
        for (; i < n; i++)
            alarm |= (uint64_t)((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f);
    }
    if (alarm == 0)
        return true;
    for (i = 0; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
            return false;
    return true;
}

/* n bytes of p equal lit, a string of lower-case letters only, in any case
 * (for a letter, OR-ing 0x20 lower-cases it and maps no other byte to it). */
static bool letters_ieq(const uint8_t *p, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    unsigned diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(p[i] | 0x20) ^ (uint8_t)lit[i];
    return diff == 0;
}
#define LETTERS_IEQ(p, n, lit) letters_ieq(p, n, lit, sizeof(lit) - 1)

#define NAME_IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)

static enum h2_check_verdict bad(const char **why, const char *what)
{
    *why = what;
    return H2_CHECK_BAD;
}

/* :status, the only response pseudo header (any other name, good
 * characters or not, is BAD). */
static enum h2_check_verdict pseudo_field(struct h2_check *c, const uint8_t *name, size_t namelen, const uint8_t *value,
                                          size_t valuelen, const char **why)
{
    if (c->final)
        return bad(why, "a pseudo header in trailers");
    if (c->regular)
        return bad(why, "a pseudo header after a regular field");
    if (!NAME_IS(":status"))
        return bad(why, "a pseudo header other than :status in a response");
    if (c->status != 0)
        return bad(why, "a second :status");
    /* Three digits: good characters, no edge whitespace. */
    if (valuelen != 3 || value[0] < '1' || value[0] > '9' || value[1] < '0' || value[1] > '9' || value[2] < '0' ||
        value[2] > '9')
        return bad(why, "a :status that is not three digits");
    c->status = (uint16_t)((value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0'));
    return H2_CHECK_OK;
}

/* A decimal number without sign or spaces, at most INT64_MAX, or -1. */
static int64_t parse_length(const uint8_t *p, size_t n)
{
    if (n == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (INT64_MAX - (p[i] - '0')) / 10)
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* A regular field's value and its own rules, in a request or a response
 * (its name is good; *content_length takes a content-length). te's and
 * content-length's own checks are stricter than value_ok's, and
 * content-type's usual value is good as it stands: those skip the scan. */
static enum h2_check_verdict regular_field(int64_t *content_length, const uint8_t *name, size_t namelen,
                                           const uint8_t *value, size_t valuelen, const char **why)
{
    switch (namelen) {
    case 2:
        if (NAME_IS("te"))
            return LETTERS_IEQ(value, valuelen, "trailers") ? H2_CHECK_OK : bad(why, "te other than trailers");
        break;
    case 7:
    case 10:
    case 16:
    case 17:
        if (NAME_IS("upgrade") || NAME_IS("connection") || NAME_IS("keep-alive") || NAME_IS("proxy-connection") ||
            NAME_IS("transfer-encoding"))
            return bad(why, "a connection-specific field");
        break;
    case 12:
        if (NAME_IS("content-type") && valuelen == 16 && memcmp(value, "application/grpc", 16) == 0)
            return H2_CHECK_OK;
        break;
    case 14:
        if (NAME_IS("content-length")) {
            if (*content_length != -1)
                return bad(why, "a second content-length");
            if ((*content_length = parse_length(value, valuelen)) < 0)
                return bad(why, "a content-length that is not a number");
            return H2_CHECK_OK;
        }
        break;
    default: break;
    }
    if (!value_ok(value, valuelen))
        return bad(why, "a control character or edge whitespace in a field value");
    return H2_CHECK_OK;
}

enum h2_check_verdict h2_check_field(struct h2_check *c, const uint8_t *name, size_t namelen, const uint8_t *value,
                                     size_t valuelen, const char **why)
{
    if (namelen > 0 && name[0] == ':')
        return pseudo_field(c, name, namelen, value, valuelen, why);
    unsigned fault = common_name(name, namelen) ? 0 : name_fault(name, namelen);
    if (fault)
        return bad(why, fault & NAME_UPPER ? "an upper-case field name" : "a bad character in a field name");
    c->regular = true;
    return regular_field(&c->content_length, name, namelen, value, valuelen, why);
}

enum h2_check_verdict h2_check_block(struct h2_check *c, bool end_stream, const char **why)
{
    if (c->final) {
        if (!end_stream)
            return bad(why, "trailers without END_STREAM");
        return h2_check_end(c, why);
    }
    if (c->status == 0)
        return bad(why, "a response without :status");
    if (c->status == 101)
        return bad(why, "a 101 (Switching Protocols) response");
    if (c->status < 200) {
        c->content_length = -1; /* a 1xx answer's fields say nothing of the final one */
        if (end_stream)
            return bad(why, "END_STREAM on an informational (1xx) response");
        return H2_CHECK_OK;
    }
    c->final = true;
    if (c->head || c->status == 204 || c->status == 304)
        c->content_length = 0; /* no body follows, whatever content-length says */
    return end_stream ? h2_check_end(c, why) : H2_CHECK_OK;
}

enum h2_check_verdict h2_check_data(struct h2_check *c, size_t n, const char **why)
{
    c->received += n;
    if (!c->final)
        return bad(why, "DATA before the final response");
    if (c->content_length >= 0 && c->received > (uint64_t)c->content_length)
        return bad(why, "DATA past the content-length");
    return H2_CHECK_OK;
}

enum h2_check_verdict h2_check_end(const struct h2_check *c, const char **why)
{
    if (!c->final)
        return bad(why, "END_STREAM before the final response");
    if (c->content_length >= 0 && c->received != (uint64_t)c->content_length)
        return bad(why, "END_STREAM short of the content-length");
    return H2_CHECK_OK;
}

/* ---- Requests ---- */

/* What a request's blocks showed (struct h2_check_req's seen). */
#define H2_REQ_METHOD 0x001u
#define H2_REQ_SCHEME 0x002u
#define H2_REQ_PATH 0x004u
#define H2_REQ_AUTHORITY 0x008u
#define H2_REQ_HOST 0x010u
#define H2_REQ_REGULAR 0x020u    /* a regular field came: no pseudo header may follow */
#define H2_REQ_CONNECT 0x040u    /* :method CONNECT */
#define H2_REQ_OPTIONS 0x080u    /* :method OPTIONS */
#define H2_REQ_HTTP 0x100u       /* :scheme http or https (any case) */
#define H2_REQ_PATH_SLASH 0x200u /* :path starts with '/' */
#define H2_REQ_PATH_STAR 0x400u  /* :path is "*" */

void h2_check_req_init(struct h2_check_req *c)
{
    memset(c, 0, sizeof(*c));
    c->content_length = -1;
}

/* :authority and host (nghttp2's server-side set): ALPHA, DIGIT and
 * !$%&'()*+,-.:;=@[]_~. */
static const uint8_t authority_chars[256] = {
    ['!'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1,
    ['-'] = 1, ['.'] = 1, [':'] = 1, [';'] = 1, ['='] = 1,  ['@'] = 1, ['['] = 1, [']'] = 1, ['_'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,  ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,  ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,
    ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,  ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1,  ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
};

/* True when every byte of p is in table (AND-ed: one branch at the end). */
static bool all_in(const uint8_t *table, const uint8_t *p, size_t n)
{
    unsigned acc = 1;
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        acc &= table[p[i]] & table[p[i + 1]] & table[p[i + 2]] & table[p[i + 3]];
    for (; i < n; i++)
        acc &= table[p[i]];
    return acc != 0;
}

static bool authority_ok(const uint8_t *p, size_t n) { return all_in(authority_chars, p, n); }

/* :method: a token (RFC 9110 tchar, either case: name_chars says 1 or 2). */
static bool method_ok(const uint8_t *p, size_t n)
{
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= name_chars[p[i]] == 0;
    return acc == 0;
}

/* Eight bytes with a byte of 0x20 or below, or 0x7f (and false alarms
 * after one, from the borrow); bytes of 0x80 and above are good. */
static inline uint64_t nonvisible_bytes(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t del = w ^ (0x7f * ones);
    return ((w - 0x21 * ones) | (del - ones)) & ~w & high;
}

/* :path: visible characters and obs-text, no SP. Eight bytes at a time;
 * a byte check only where one looks wrong. */
static bool path_ok(const uint8_t *p, size_t n)
{
    uint64_t alarm = 0, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        alarm |= nonvisible_bytes(w);
    }
    if (i < n && n >= 8) {
        memcpy(&w, p + n - 8, 8); /* the last eight bytes, some of them again */
        alarm |= nonvisible_bytes(w);
    } else {
        for (; i < n; i++)
            alarm |= (uint64_t)(p[i] <= 0x20 || p[i] == 0x7f);
    }
    if (alarm == 0)
        return true;
    for (i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

static bool is_alpha(uint8_t ch) { return (uint8_t)((ch | 0x20) - 'a') < 26; }

/* :scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 3.1). */
static bool scheme_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || !is_alpha(p[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!is_alpha(p[i]) && (uint8_t)(p[i] - '0') >= 10 && p[i] != '+' && p[i] != '-' && p[i] != '.')
            return false;
    return true;
}

/* The flags a pseudo header's value sets besides its own bit. */
static uint16_t pseudo_flags(uint16_t bit, const uint8_t *v, size_t n)
{
    switch (bit) {
    case H2_REQ_METHOD:
        if (n == 7 && memcmp(v, "CONNECT", 7) == 0)
            return H2_REQ_CONNECT;
        return n == 7 && memcmp(v, "OPTIONS", 7) == 0 ? H2_REQ_OPTIONS : 0;
    case H2_REQ_PATH:
        if (v[0] == '/')
            return H2_REQ_PATH_SLASH;
        return n == 1 && v[0] == '*' ? H2_REQ_PATH_STAR : 0;
    case H2_REQ_SCHEME: return LETTERS_IEQ(v, n, "http") || LETTERS_IEQ(v, n, "https") ? H2_REQ_HTTP : 0;
    default: return 0;
    }
}

/* :method, :scheme, :path or :authority, each once, not empty, before any
 * regular field, never in trailers; any other pseudo header is BAD. */
static enum h2_check_verdict req_pseudo(struct h2_check_req *c, bool trailers, const uint8_t *name, size_t namelen,
                                        const uint8_t *value, size_t valuelen, const char **why)
{
    if (trailers)
        return bad(why, "a pseudo header in trailers");
    if (c->seen & H2_REQ_REGULAR)
        return bad(why, "a pseudo header after a regular field");
    uint16_t bit = 0;
    bool ok = false;
    switch (namelen) {
    case 5:
        if (NAME_IS(":path"))
            bit = H2_REQ_PATH, ok = path_ok(value, valuelen);
        break;
    case 7:
        if (NAME_IS(":method"))
            bit = H2_REQ_METHOD, ok = method_ok(value, valuelen);
        else if (NAME_IS(":scheme"))
            bit = H2_REQ_SCHEME, ok = scheme_ok(value, valuelen);
        break;
    case 10:
        if (NAME_IS(":authority"))
            bit = H2_REQ_AUTHORITY, ok = authority_ok(value, valuelen);
        break;
    default: break;
    }
    if (bit == 0)
        return bad(why, "a pseudo header other than :method, :scheme, :path and :authority in a request");
    if (!ok)
        return bad(why, "a bad character in a pseudo header");
    if (c->seen & bit)
        return bad(why, "a pseudo header twice");
    if (valuelen == 0)
        return bad(why, "an empty pseudo header");
    c->seen |= bit | pseudo_flags(bit, value, valuelen);
    return H2_CHECK_OK;
}

enum h2_check_verdict h2_check_req_field(struct h2_check_req *c, bool trailers, const uint8_t *name, size_t namelen,
                                         const uint8_t *value, size_t valuelen, const char **why)
{
    if (namelen > 0 && name[0] == ':')
        return req_pseudo(c, trailers, name, namelen, value, valuelen, why);
    unsigned fault = common_name(name, namelen) ? 0 : name_fault(name, namelen);
    if (fault)
        return bad(why, fault & NAME_UPPER ? "an upper-case field name" : "a bad character in a field name");
    c->seen |= H2_REQ_REGULAR;
    if (NAME_IS("host")) {
        if (!authority_ok(value, valuelen))
            return bad(why, "a bad character in host");
        if ((c->seen & H2_REQ_HOST) || valuelen == 0)
            return bad(why, "host twice, or empty");
        c->seen |= H2_REQ_HOST;
        return H2_CHECK_OK;
    }
    return regular_field(&c->content_length, name, namelen, value, valuelen, why);
}

enum h2_check_verdict h2_check_req_block(struct h2_check_req *c, bool trailers, bool end_stream, const char **why)
{
    if (trailers) {
        if (!end_stream)
            return bad(why, "trailers without END_STREAM");
        return h2_check_req_end(c, why);
    }
    const uint16_t need = H2_REQ_METHOD | H2_REQ_SCHEME | H2_REQ_PATH;
    if (c->seen & H2_REQ_CONNECT) {
        if ((c->seen & (H2_REQ_SCHEME | H2_REQ_PATH)) || !(c->seen & H2_REQ_AUTHORITY))
            return bad(why, "a CONNECT request with :scheme or :path, or without :authority");
        c->content_length = -1; /* a tunnel's bytes are not its body */
    } else if ((c->seen & need) != need) {
        return bad(why, "a request without :method, :scheme or :path");
    } else if (!(c->seen & (H2_REQ_AUTHORITY | H2_REQ_HOST))) {
        return bad(why, "a request without :authority or host");
    } else if ((c->seen & H2_REQ_HTTP) && !(c->seen & H2_REQ_PATH_SLASH) &&
               !((c->seen & H2_REQ_OPTIONS) && (c->seen & H2_REQ_PATH_STAR))) {
        return bad(why, "an http(s) :path that does not start with '/'");
    }
    return end_stream ? h2_check_req_end(c, why) : H2_CHECK_OK;
}

enum h2_check_verdict h2_check_req_data(struct h2_check_req *c, size_t n, const char **why)
{
    c->received += n;
    if (c->content_length >= 0 && c->received > (uint64_t)c->content_length)
        return bad(why, "DATA past the content-length");
    return H2_CHECK_OK;
}

enum h2_check_verdict h2_check_req_end(const struct h2_check_req *c, const char **why)
{
    if (c->content_length >= 0 && c->received != (uint64_t)c->content_length)
        return bad(why, "END_STREAM short of the content-length");
    return H2_CHECK_OK;
}
