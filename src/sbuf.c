/* The operations plane's text buffer (sbuf.h). */
#include "grelay/sbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_free(struct gr_sbuf *b)
{
    free(b->p);
    *b = (struct gr_sbuf){.max = b->max};
}

static bool room(struct gr_sbuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    if (b->max != 0 && b->len + n + 1 > b->max) {
        b->failed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    if (b->max != 0 && cap > b->max)
        cap = b->max;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void sbuf_add(struct gr_sbuf *b, const char *s, size_t n)
{
    if (!room(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_puts(struct gr_sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

void sbuf_vprintf(struct gr_sbuf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    if (n < 0) {
        b->failed = true;
    } else if ((size_t)n < sizeof(small)) {
        sbuf_add(b, small, (size_t)n);
    } else if (room(b, (size_t)n)) {
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

void sbuf_printf(struct gr_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sbuf_vprintf(b, fmt, ap);
    va_end(ap);
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t want = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (want == 0 || want > n)
        return 0;
    for (size_t i = 1; i < want; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return want;
}

void sbuf_json_str(struct gr_sbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    sbuf_add(b, "\"", 1);
    size_t run = 0; /* bytes from i - run copied as they are */
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t k = c >= 0x20 && c < 0x80 && c != '"' && c != '\\' ? 1 : c >= 0x80 ? utf8_len(u + i, n - i) : 0;
        if (k > 0) {
            i += k;
            run += k;
            continue;
        }
        sbuf_add(b, (const char *)u + i - run, run);
        run = 0;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sbuf_add(b, esc, 2);
        } else if (c == '\n') {
            sbuf_add(b, "\\n", 2);
        } else if (c == '\t') {
            sbuf_add(b, "\\t", 2);
        } else if (c == '\r') {
            sbuf_add(b, "\\r", 2);
        } else {
            sbuf_printf(b, "\\u%04x", c);
        }
        i++;
    }
    sbuf_add(b, (const char *)u + n - run, run);
    sbuf_add(b, "\"", 1);
}

void sbuf_label(struct gr_sbuf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\' || *p == '"')
            sbuf_add(b, "\\", 1);
        if (*p == '\n')
            sbuf_add(b, "\\n", 2);
        else
            sbuf_add(b, p, 1);
    }
}
