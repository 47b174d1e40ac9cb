/* A strict HTTP/1.1 request framing check, run over the bytes before
 * http-parser sees them. http-parser 2.9 (strict build or not) accepts
 * bare LF line ends, obs-fold, whitespace inside and after header names,
 * several spaces in the request line, HTTP/0.9 and versions 1.2-9.9,
 * "chunked" twice, "gzip, chunked", chunked on HTTP/1.0, and chunk data
 * not followed by CRLF: each a way for a proxy in front of grelay and
 * grelay to disagree on where a request ends. This scanner accepts only
 * what RFC 9112 allows (minus absolute-form targets), so http-parser only
 * ever reads input on which every parser agrees. It reads one request:
 * request line, header section, body (Content-Length or chunked, with
 * trailers), and stops at its end. Holds no pointer: a plain value,
 * embedded in its connection. */
#ifndef GRELAY_H1_STRICT_H
#define GRELAY_H1_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The framing header a field line is (while its value is read). */
enum h1s_field {
    H1S_OTHER, /* any other field */
    H1S_CL,    /* content-length */
    H1S_TE,    /* transfer-encoding */
    H1S_HOST,  /* host */
};

struct h1_strict {
    uint8_t state;        /* where in the request (enum in h1_strict.c) */
    uint8_t vlen;         /* bytes of ver[] or te[] held */
    uint8_t namelen;      /* bytes of name[] held (lower-case; longer names are H1S_OTHER) */
    uint8_t field;        /* enum h1s_field of the field being read */
    bool trailers;        /* the field lines are the chunked body's trailer section */
    bool value_started;   /* a non-blank byte of the value was seen */
    bool value_bad;       /* the framing field's value is not acceptable */
    uint8_t pending_ws;   /* blanks seen inside the value, not yet known to be inner */
    uint8_t cl_count;     /* Content-Length field lines (capped at 2) */
    uint8_t te_count;     /* Transfer-Encoding field lines (capped at 2) */
    uint8_t host_count;   /* Host field lines (capped at 2) */
    uint8_t http_minor;   /* 0 or 1, from the request line */
    uint8_t empty_lines;  /* empty lines before the request line */
    bool te_chunked;      /* the Transfer-Encoding value is exactly "chunked" */
    uint8_t chunk_digits; /* hex digits of the chunk size read */
    uint16_t ext_len;     /* bytes of the current chunk extension */
    char name[20];        /* the field name being read, lower-case, first bytes */
    char ver[10];         /* "HTTP/1.1" from the request line, or te's value, first bytes */
    uint64_t cl;          /* the Content-Length value */
    uint64_t remaining;   /* body or chunk bytes still to skip */
    const char *why;      /* after an error: what was wrong (static text) */
};

/* Ready for a request's first byte. */
void h1_strict_init(struct h1_strict *st);
/* Scans len bytes of the current request. Returns 0 with *used = bytes
 * that belong to it (all of them, unless the request ended before len),
 * or the HTTP status to answer (400, or 505 for a version other than 1.0
 * and 1.1) with *used at the offending byte and st->why saying why. */
int h1_strict_scan(struct h1_strict *st, const uint8_t *p, size_t len, size_t *used);
/* The request scanned so far is complete (its last byte was seen). */
bool h1_strict_done(const struct h1_strict *st);

#endif
