/* A growable text buffer for what the operations plane writes: metrics
 * pages, JSON, admin answers. Off the data path (the main thread), except
 * where a caller bounds it (max). A failed growth marks it failed and
 * drops the rest; the caller checks once at the end. */
#ifndef GRELAY_SBUF_H
#define GRELAY_SBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct gr_sbuf {
    char *p;     /* the text, NUL-terminated once anything was written; owned */
    size_t len;  /* bytes written, without the NUL */
    size_t cap;  /* bytes allocated at p */
    size_t max;  /* growth stops here (the write fails); 0: no limit */
    bool failed; /* an append did not fit (out of memory or past max) */
};

static inline void sbuf_init(struct gr_sbuf *b) { *b = (struct gr_sbuf){0}; }
void sbuf_free(struct gr_sbuf *b);
/* Appends n bytes of s. */
void sbuf_add(struct gr_sbuf *b, const char *s, size_t n);
void sbuf_puts(struct gr_sbuf *b, const char *s);
void sbuf_printf(struct gr_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_vprintf(struct gr_sbuf *b, const char *fmt, va_list ap);
/* Appends s (n bytes, any bytes) as a JSON string, quotes included:
 * control characters, quotes and backslashes escaped, invalid UTF-8
 * bytes as \u00XX of the byte. */
void sbuf_json_str(struct gr_sbuf *b, const char *s, size_t n);
/* Appends s as a Prometheus label value: backslash, quote and newline
 * escaped (exposition format 0.0.4). */
void sbuf_label(struct gr_sbuf *b, const char *s);

#endif
