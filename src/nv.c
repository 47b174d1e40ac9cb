/* HEADERS name/value arrays of a call (see include/grelay/nv.h). */
#include "grelay/nv.h"
#include "grelay/grpc.h"

#include <string.h>

nghttp2_nv *nv_from_list(struct arena *a, const struct hdr_list *l, size_t extra, size_t *n)
{
    nghttp2_nv *nva = arena_alloc(a, (l->n + extra) * sizeof(*nva));
    if (nva == NULL)
        return NULL;
    size_t k = extra;
    for (uint32_t i = 0; i < l->n; i++) {
        const struct gr_hdr *h = &l->v[i];
        if (h->namelen == 0)
            continue;
        nva[k] = nv_make(h->name, h->namelen, h->value, h->valuelen);
        /* A request id is new on every call: in the HPACK dynamic table it
         * would only evict what repeats (and cost an insertion each call). */
        if (h->namelen == 12 && memcmp(h->name, "x-request-id", 12) == 0)
            nva[k].flags = NGHTTP2_NV_FLAG_NO_INDEX;
        k++;
    }
    *n = k;
    return nva;
}

static bool name_is(const struct gr_hdr *h, const char *lit, size_t len)
{
    return h->namelen == len && memcmp(h->name, lit, len) == 0;
}

nghttp2_nv *nv_response(struct arena *a, const char *status, const struct hdr_list *l, bool add_ct,
                        const struct nv_resp *r, size_t *n)
{
    nghttp2_nv *nva = arena_alloc(a, (l->n + 7) * sizeof(*nva));
    if (nva == NULL)
        return NULL;
    const uint8_t *ct = (const uint8_t *)r->content_type;
    size_t ctlen = strlen(r->content_type), k = 0;
    nva[k++] = nv_make(NV_LIT(":status"), (const uint8_t *)status, strlen(status));
    if (add_ct)
        nva[k++] = nv_make(NV_LIT("content-type"), ct, ctlen);
    for (uint32_t i = 0; i < l->n; i++) {
        const struct gr_hdr *h = &l->v[i];
        if (h->namelen == 0 || (r->web && name_is(h, "content-length", 14)))
            continue;
        if (r->web && name_is(h, "content-type", 12))
            nva[k++] = nv_make(NV_LIT("content-type"), ct, ctlen);
        else
            nva[k++] = nv_make(h->name, h->namelen, h->value, h->valuelen);
    }
    if (r->cors != NULL) {
        nva[k++] = nv_make(NV_LIT("access-control-allow-origin"), r->origin->value, r->origin->valuelen);
        nva[k++] = nv_make(NV_LIT("access-control-expose-headers"), (const uint8_t *)r->cors->expose_value,
                           strlen(r->cors->expose_value));
        if (r->cors->allow_credentials)
            nva[k++] = nv_make(NV_LIT("access-control-allow-credentials"), NV_LIT("true"));
        nva[k++] = nv_make(NV_LIT("vary"), NV_LIT("origin"));
    }
    *n = k;
    return nva;
}

nghttp2_nv *nv_request(struct arena *a, const struct hdr_list *hdrs, const struct nv_req *r, size_t *n)
{
    size_t extra = r->timeout_us ? 5 : 4;
    nghttp2_nv *nva = nv_from_list(a, hdrs, extra, n);
    if (nva == NULL)
        return NULL;
    if (r->timeout_us) {
        char *v = arena_alloc(a, 16);
        if (v == NULL)
            return NULL;
        size_t vlen = grpc_timeout_format(r->timeout_us, v);
        nva[4] = nv_make(NV_LIT("grpc-timeout"), (const uint8_t *)v, vlen);
    }
    nva[0] = r->method->value ? nv_make(NV_LIT(":method"), r->method->value, r->method->valuelen)
                              : nv_make(NV_LIT(":method"), NV_LIT("POST"));
    nva[1] = r->https ? nv_make(NV_LIT(":scheme"), NV_LIT("https")) : nv_make(NV_LIT(":scheme"), NV_LIT("http"));
    nva[2] = r->authority->value ? nv_make(NV_LIT(":authority"), r->authority->value, r->authority->valuelen)
                                 : nv_make(NV_LIT(":authority"), (const uint8_t *)r->fallback, strlen(r->fallback));
    nva[3] = nv_make(NV_LIT(":path"), r->path->value, r->path->valuelen);
    return nva;
}
