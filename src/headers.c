/* Header lists and the hop-by-hop filter. */
#include "grelay/headers.h"
#include "grelay/common.h"

#include <string.h>
#include <strings.h>

int headers_add(struct hdr_list *l, struct arena *a, const uint8_t *name, size_t namelen, const uint8_t *value,
                size_t valuelen)
{
    if (l->n == l->cap) {
        uint32_t ncap = l->cap ? l->cap * 2 : 4; /* most gRPC header sets fit; the stream arena holds them */
        struct gr_hdr *nv = arena_alloc(a, ncap * sizeof(*nv));
        if (nv == NULL)
            return GR_ERR_NOMEM;
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof(*nv));
        l->v = nv;
        l->cap = ncap;
    }
    char *p = arena_alloc(a, namelen + valuelen + 2);
    if (p == NULL)
        return GR_ERR_NOMEM;
    memcpy(p, name, namelen);
    p[namelen] = '\0';
    memcpy(p + namelen + 1, value, valuelen);
    p[namelen + 1 + valuelen] = '\0';
    struct gr_hdr *h = &l->v[l->n++];
    h->name = (const uint8_t *)p;
    h->namelen = (uint32_t)namelen;
    h->value = (const uint8_t *)p + namelen + 1;
    h->valuelen = (uint32_t)valuelen;
    l->bytes += namelen + valuelen;
    return GR_OK;
}

void headers_remove(struct hdr_list *l, const char *name)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].namelen == len && memcmp(l->v[i].name, name, len) == 0)
            l->v[i].namelen = 0;
}

const struct gr_hdr *headers_find_len(const struct hdr_list *l, const char *name, size_t len)
{
    for (uint32_t i = 0; i < l->n; i++) {
        const struct gr_hdr *h = &l->v[i];
        /* The first byte first: most names differ there (no memcmp call). */
        if (h->namelen == len && len > 0 && h->name[0] == (uint8_t)name[0] && memcmp(h->name, name, len) == 0)
            return h;
    }
    return NULL;
}

#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)

bool headers_hop_by_hop(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    if (IS("te"))
        return !(valuelen == 8 && strncasecmp((const char *)value, "trailers", 8) == 0);
    return IS("connection") || IS("keep-alive") || IS("proxy-connection") || IS("transfer-encoding") || IS("upgrade") ||
           IS("http2-settings");
}

void headers_drop_listed(struct hdr_list *l, const uint8_t *list, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (list[i] == ',' || list[i] == ' ' || list[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',' && list[i] != ' ' && list[i] != '\t')
            i++;
        size_t n = i - start;
        for (uint32_t k = 0; k < l->n && n > 0; k++)
            if (l->v[k].namelen == n && strncasecmp((const char *)l->v[k].name, (const char *)list + start, n) == 0)
                l->v[k].namelen = 0;
    }
}
