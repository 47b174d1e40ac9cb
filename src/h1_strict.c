/* Strict HTTP/1.1 request framing (see include/grelay/h1_strict.h). One
 * byte at a time, except body and chunk data, which are skipped whole. */
#include "grelay/h1_strict.h"

#include <string.h>

enum {
    ST_START,      /* before the request line (empty lines allowed) */
    ST_START_LF,   /* CR of an empty line before the request line */
    ST_METHOD,     /* in the method */
    ST_TARGET0,    /* first byte of the request target */
    ST_TARGET,     /* in the request target */
    ST_VERSION,    /* in "HTTP/1.x" */
    ST_LINE_LF,    /* CR ending the request line seen */
    ST_FIELD0,     /* first byte of a field line, or CR of the empty line */
    ST_NAME,       /* in a field name */
    ST_VALUE,      /* in a field value (leading blanks skipped) */
    ST_VALUE_LF,   /* CR ending a field line seen */
    ST_HEAD_LF,    /* CR of the empty line ending a field section seen */
    ST_BODY,       /* Content-Length body bytes */
    ST_CHUNK_SIZE, /* hex digits of a chunk size */
    ST_CHUNK_BWS,  /* blanks after the chunk size: a ';' must follow */
    ST_CHUNK_EXT,  /* a chunk extension (ignored, bounded) */
    ST_CHUNK_LF,   /* CR ending a chunk size line seen */
    ST_DATA,       /* chunk data bytes */
    ST_DATA_CR,    /* the CR after chunk data is due */
    ST_DATA_LF,    /* the LF after chunk data is due */
    ST_DONE,       /* the request ended */
};

#define MAX_CHUNK_DIGITS 15 /* 2^60 bytes: more is no body anyone sends */
#define MAX_CHUNK_EXT 4096  /* bytes of extensions on one chunk line */
#define MAX_CL 999999999999999ULL
#define MAX_EMPTY_LINES 4 /* before a request line: RFC 9112 2.2 asks for at least one */

#define FAIL(text)                                                                                                     \
    do {                                                                                                               \
        st->why = (text);                                                                                              \
        return 400;                                                                                                    \
    } while (0)

static const char BARE_LF[] = "bare LF as a line end (CRLF is required)";
static const char BARE_CR[] = "CR not followed by LF";

void h1_strict_init(struct h1_strict *st) { memset(st, 0, sizeof(*st)); }

bool h1_strict_done(const struct h1_strict *st) { return st->state == ST_DONE; }

static bool is_alnum(uint8_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }

/* RFC 9110 tchar: the bytes of a method or a field name. */
static bool is_tchar(uint8_t c) { return is_alnum(c) || (c != 0 && memchr("!#$%&'*+-.^_`|~", c, 15) != NULL); }

/* uri-host [":" port]: reg-name, IPv4 or an IP literal in brackets. */
static bool is_host_char(uint8_t c) { return is_alnum(c) || (c != 0 && memchr("-._~!$&'()*+,;=:[]%", c, 19) != NULL); }

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* The request line's last byte before CR: HTTP/1.0 and HTTP/1.1 only. */
static int end_request_line(struct h1_strict *st)
{
    if (st->vlen == 8 && memcmp(st->ver, "HTTP/1.", 7) == 0 && (st->ver[7] == '0' || st->ver[7] == '1')) {
        st->http_minor = (uint8_t)(st->ver[7] - '0');
        st->state = ST_LINE_LF;
        return 0;
    }
    if (st->vlen == 8 && memcmp(st->ver, "HTTP/", 5) == 0 && is_alnum((uint8_t)st->ver[5]) && st->ver[6] == '.') {
        st->why = "HTTP version not supported (1.0 and 1.1 are)";
        return 505;
    }
    FAIL(st->vlen == 0 ? "request line without an HTTP version (HTTP/0.9 is not served)" : "invalid HTTP version");
}

static int step_line(struct h1_strict *st, uint8_t c)
{
    switch (st->state) {
    case ST_START:
        if (c == '\r')
            st->state = ST_START_LF;
        else if (is_tchar(c))
            st->state = ST_METHOD;
        else
            FAIL(c == '\n' ? BARE_LF : "invalid byte at the start of the request line");
        return 0;
    case ST_START_LF:
        if (c != '\n')
            FAIL(BARE_CR);
        if (++st->empty_lines > MAX_EMPTY_LINES)
            FAIL("too many empty lines before the request line");
        st->state = ST_START;
        return 0;
    case ST_METHOD:
        if (c == ' ')
            st->state = ST_TARGET0;
        else if (!is_tchar(c))
            FAIL(c == '\r' || c == '\n' ? "request line without a target (HTTP/0.9 is not served)"
                                        : "invalid byte in the method, or a separator other than one space");
        return 0;
    case ST_TARGET0:
        if (c == ' ')
            FAIL("more than one space in the request line");
        if (c != '/')
            FAIL("request target is not in origin-form (absolute-form, authority-form and * are not served)");
        st->state = ST_TARGET;
        return 0;
    case ST_TARGET:
        if (c == ' ')
            st->state = ST_VERSION;
        else if (c < 0x21 || c > 0x7e)
            FAIL(c == '\r' || c == '\n' ? "request line without an HTTP version (HTTP/0.9 is not served)"
                                        : "invalid byte in the request target");
        return 0;
    case ST_VERSION:
        if (c == '\r')
            return end_request_line(st);
        if (c == ' ')
            FAIL("more than one space in the request line, or a space after the version");
        if (c == '\n')
            FAIL(BARE_LF);
        if (st->vlen >= sizeof(st->ver) || !(is_alnum(c) || c == '/' || c == '.'))
            FAIL("invalid HTTP version");
        st->ver[st->vlen++] = (char)c;
        return 0;
    default: /* ST_LINE_LF */
        if (c != '\n')
            FAIL(BARE_CR);
        st->state = ST_FIELD0;
        return 0;
    }
}

/* A ':' ended the field name: which framing field this is. */
static int begin_value(struct h1_strict *st)
{
    st->field = H1S_OTHER;
    if (st->namelen == 14 && memcmp(st->name, "content-length", 14) == 0)
        st->field = H1S_CL;
    else if (st->namelen == 17 && memcmp(st->name, "transfer-encoding", 17) == 0)
        st->field = H1S_TE;
    else if (st->namelen == 4 && memcmp(st->name, "host", 4) == 0)
        st->field = H1S_HOST;
    if (st->field != H1S_OTHER && st->trailers)
        FAIL("Content-Length, Transfer-Encoding or Host in the trailer section");
    if (st->field == H1S_CL) {
        st->cl = 0;
        st->cl_count = st->cl_count < 2 ? (uint8_t)(st->cl_count + 1) : 2;
    } else if (st->field == H1S_TE) {
        st->te_count = st->te_count < 2 ? (uint8_t)(st->te_count + 1) : 2;
    } else if (st->field == H1S_HOST) {
        st->host_count = st->host_count < 2 ? (uint8_t)(st->host_count + 1) : 2;
    }
    st->vlen = 0;
    st->value_started = st->value_bad = false;
    st->pending_ws = 0;
    st->state = ST_VALUE;
    return 0;
}

/* One byte of a value (a blank between two others arrives as one ' '). */
static void value_byte(struct h1_strict *st, uint8_t c)
{
    if (st->field == H1S_CL) {
        if (c >= '0' && c <= '9' && st->cl <= MAX_CL / 10)
            st->cl = st->cl * 10 + (uint64_t)(c - '0');
        else
            st->value_bad = true;
    } else if (st->field == H1S_TE) {
        if (st->vlen < sizeof(st->ver))
            st->ver[st->vlen++] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
        else
            st->value_bad = true;
    } else if (st->field == H1S_HOST && !is_host_char(c)) {
        st->value_bad = true;
    }
}

static int end_field(struct h1_strict *st)
{
    if (st->field == H1S_CL && (st->value_bad || !st->value_started))
        FAIL("invalid Content-Length (1 to 15 digits, one value)");
    if (st->field == H1S_TE)
        st->te_chunked = !st->value_bad && st->vlen == 7 && memcmp(st->ver, "chunked", 7) == 0;
    if (st->field == H1S_HOST && st->value_bad)
        FAIL("invalid Host");
    st->state = ST_FIELD0;
    return 0;
}

/* The empty line: the header section (or the trailers) ended. */
static int end_section(struct h1_strict *st)
{
    if (st->trailers) {
        st->state = ST_DONE;
        return 0;
    }
    if (st->cl_count > 1)
        FAIL("more than one Content-Length");
    if (st->te_count > 1)
        FAIL("Transfer-Encoding given more than once");
    if (st->cl_count > 0 && st->te_count > 0)
        FAIL("both Content-Length and Transfer-Encoding");
    if (st->te_count > 0 && st->http_minor == 0)
        FAIL("Transfer-Encoding in an HTTP/1.0 request");
    if (st->te_count > 0 && !st->te_chunked)
        FAIL("Transfer-Encoding other than exactly \"chunked\"");
    if (st->host_count > 1)
        FAIL("more than one Host");
    if (st->host_count == 0 && st->http_minor == 1)
        FAIL("HTTP/1.1 request without Host");
    st->remaining = 0;
    st->chunk_digits = 0;
    if (st->te_count > 0)
        st->state = ST_CHUNK_SIZE;
    else if (st->cl > 0) {
        st->state = ST_BODY;
        st->remaining = st->cl;
    } else
        st->state = ST_DONE;
    return 0;
}

static int step_name(struct h1_strict *st, uint8_t c)
{
    if (c == ':')
        return begin_value(st);
    if (c == ' ' || c == '\t')
        FAIL("whitespace between a header name and its colon");
    if (c == '\n')
        FAIL(BARE_LF);
    if (c == '\r')
        FAIL("header line without a colon");
    if (!is_tchar(c))
        FAIL("invalid byte in a header name");
    if (st->namelen < sizeof(st->name))
        st->name[st->namelen] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
    if (st->namelen < UINT8_MAX)
        st->namelen++;
    return 0;
}

static int step_field(struct h1_strict *st, uint8_t c)
{
    switch (st->state) {
    case ST_FIELD0:
        if (c == '\r') {
            st->state = ST_HEAD_LF;
            return 0;
        }
        if (c == ' ' || c == '\t')
            FAIL("obs-fold or whitespace at the start of a header line");
        if (c == ':')
            FAIL("empty header name");
        st->namelen = 0;
        st->state = ST_NAME;
        return step_name(st, c);
    case ST_NAME: return step_name(st, c);
    case ST_VALUE:
        if (c == ' ' || c == '\t') {
            if (st->value_started && st->pending_ws < UINT8_MAX)
                st->pending_ws++;
            return 0;
        }
        if (c == '\r') {
            st->state = ST_VALUE_LF;
            return 0;
        }
        if (c == '\n')
            FAIL(BARE_LF);
        if (c < 0x20 || c == 0x7f)
            FAIL("control byte (NUL, CR or another) in a header value");
        if (st->pending_ws > 0)
            value_byte(st, ' ');
        st->pending_ws = 0;
        st->value_started = true;
        value_byte(st, c);
        return 0;
    case ST_VALUE_LF:
        if (c != '\n')
            FAIL("CR inside a header line");
        return end_field(st);
    default: /* ST_HEAD_LF */
        if (c != '\n')
            FAIL(BARE_CR);
        return end_section(st);
    }
}

static int step_chunk_size(struct h1_strict *st, uint8_t c)
{
    int v = hex_value(c);
    if (v >= 0) {
        if (st->chunk_digits >= MAX_CHUNK_DIGITS)
            FAIL("chunk size too large");
        st->remaining = st->remaining << 4 | (uint64_t)v;
        st->chunk_digits++;
        return 0;
    }
    if (st->chunk_digits == 0)
        FAIL("invalid chunk size");
    st->ext_len = 0;
    if (c == ' ' || c == '\t')
        st->state = ST_CHUNK_BWS;
    else if (c == ';')
        st->state = ST_CHUNK_EXT;
    else if (c == '\r')
        st->state = ST_CHUNK_LF;
    else
        FAIL(c == '\n' ? BARE_LF : "invalid chunk size");
    return 0;
}

static int step_chunk(struct h1_strict *st, uint8_t c)
{
    switch (st->state) {
    case ST_CHUNK_SIZE: return step_chunk_size(st, c);
    case ST_CHUNK_BWS:
        if (c == ';')
            st->state = ST_CHUNK_EXT;
        else if ((c != ' ' && c != '\t') || ++st->ext_len > MAX_CHUNK_EXT)
            FAIL("invalid chunk size");
        return 0;
    case ST_CHUNK_EXT:
        if (c == '\r')
            st->state = ST_CHUNK_LF;
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
            FAIL(c == '\n' ? BARE_LF : "control byte in a chunk extension");
        else if (++st->ext_len > MAX_CHUNK_EXT)
            FAIL("chunk extension too long");
        return 0;
    case ST_CHUNK_LF:
        if (c != '\n')
            FAIL(BARE_CR);
        st->trailers = st->remaining == 0;
        st->state = st->trailers ? ST_FIELD0 : ST_DATA;
        return 0;
    case ST_DATA_CR:
        if (c != '\r')
            FAIL("chunk data not followed by CRLF");
        st->state = ST_DATA_LF;
        return 0;
    default: /* ST_DATA_LF */
        if (c != '\n')
            FAIL("chunk data not followed by CRLF");
        st->state = ST_CHUNK_SIZE;
        st->chunk_digits = 0;
        return 0;
    }
}

int h1_strict_scan(struct h1_strict *st, const uint8_t *p, size_t len, size_t *used)
{
    size_t i = 0;
    int rc = 0;
    while (i < len && st->state != ST_DONE && rc == 0) {
        if (st->state == ST_BODY || st->state == ST_DATA) {
            size_t n = len - i < st->remaining ? len - i : (size_t)st->remaining;
            st->remaining -= n;
            i += n;
            if (st->remaining == 0)
                st->state = st->state == ST_BODY ? ST_DONE : ST_DATA_CR;
            continue;
        }
        uint8_t c = p[i];
        if (st->state <= ST_LINE_LF)
            rc = step_line(st, c);
        else if (st->state <= ST_HEAD_LF)
            rc = step_field(st, c);
        else
            rc = step_chunk(st, c);
        if (rc == 0)
            i++;
    }
    *used = i;
    return rc;
}
