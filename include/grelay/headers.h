/* Header lists of one message, stored in the stream's arena. */
#ifndef GRELAY_HEADERS_H
#define GRELAY_HEADERS_H

#include "grelay/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* What RFC 9113 6.5.2 (and RFC 7541 4.1) add to name and value when they
 * size a field: SETTINGS_MAX_HEADER_LIST_SIZE counts 32 + name + value. */
#define HEADERS_FIELD_OVERHEAD 32

/* One header field. */
struct gr_hdr {
    const uint8_t *name;  /* lower-case, NUL-terminated */
    const uint8_t *value; /* NUL-terminated */
    uint32_t namelen;     /* bytes in name, without the NUL; 0 for a removed entry */
    uint32_t valuelen;    /* bytes in value, without the NUL */
};

/* The header fields of one message, in arrival order. */
struct hdr_list {
    struct gr_hdr *v; /* entries in arrival order */
    uint32_t n;       /* entries used */
    uint32_t cap;     /* entries allocated */
    size_t bytes;     /* sum of name and value lengths */
};

static inline void headers_init(struct hdr_list *l)
{
    l->v = NULL;
    l->n = l->cap = 0;
    l->bytes = 0;
}
/* Copies name and value into the arena; returns 0 or GR_ERR_NOMEM. */
int headers_add(struct hdr_list *l, struct arena *a, const uint8_t *name, size_t namelen, const uint8_t *value,
                size_t valuelen);
/* Drops every header with this name (entries stay, with namelen 0). */
void headers_remove(struct hdr_list *l, const char *name);
/* First header with this (lower-case) name of len bytes, or NULL. */
const struct gr_hdr *headers_find_len(const struct hdr_list *l, const char *name, size_t len);
/* First header with this (lower-case) name, or NULL (inline: the length of
 * a literal name is known when compiling). */
static inline const struct gr_hdr *headers_find(const struct hdr_list *l, const char *name)
{
    return headers_find_len(l, name, strlen(name));
}
/* True for headers a proxy must not forward: connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade, http2-settings, and te
 * other than "trailers". */
bool headers_hop_by_hop(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* Drops from l every field named in list, a Connection header's value
 * (comma-separated names, any case; RFC 9110 section 7.6.1). */
void headers_drop_listed(struct hdr_list *l, const uint8_t *list, size_t len);

#endif
