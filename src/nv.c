/* HEADERS name/value arrays of a call (see include/grelay/nv.h). */
#include "grelay/nv.h"
#include "grelay/grpc.h"

#include <string.h>

/* Flags for a name, a value or both that are static strings. */
#define NO_COPY_NAME NGHTTP2_NV_FLAG_NO_COPY_NAME
#define NO_COPY_BOTH (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* A field name most calls carry, and the value it usually has (NULL: none
 * worth keeping), as static strings: nghttp2 takes them without copying or
 * lower-casing them (NGHTTP2_NV_FLAG_NO_COPY_*), which is safe only for
 * memory that outlives every frame still queued; the call's arenas do not
 * always do (a stream can be freed while frames it submitted wait). */
struct nv_known {
    const char *name;  /* lower-case */
    size_t namelen;    /* bytes in name */
    const char *value; /* its usual value, or NULL */
    size_t valuelen;   /* bytes in value */
};

#define KNOWN(n, v)                                                                                                    \
    {                                                                                                                  \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                                             \
    }
#define KNOWN_NAME(n)                                                                                                  \
    {                                                                                                                  \
        n, sizeof(n) - 1, NULL, 0                                                                                      \
    }
static const struct nv_known known_te = KNOWN("te", "trailers");
static const struct nv_known known_ua = KNOWN_NAME("user-agent");
static const struct nv_known known_status = KNOWN("grpc-status", "0");
static const struct nv_known known_ct = KNOWN("content-type", "application/grpc");
static const struct nv_known known_msg = KNOWN_NAME("grpc-message");
static const struct nv_known known_rid = KNOWN_NAME("x-request-id");
static const struct nv_known known_enc = KNOWN_NAME("grpc-encoding");
static const struct nv_known known_accept = KNOWN("grpc-accept-encoding", "identity,deflate,gzip");

static bool same(const uint8_t *p, size_t len, const char *lit, size_t litlen)
{
    return len == litlen && memcmp(p, lit, len) == 0;
}

/* The known field named p[0..len), or NULL. */
static const struct nv_known *known_field(const uint8_t *p, size_t len)
{
    const struct nv_known *k;
    switch (len) {
    case 2: k = &known_te; break;
    case 10: k = &known_ua; break;
    case 11: k = &known_status; break;
    case 12: k = p[0] == 'c' ? &known_ct : p[0] == 'g' ? &known_msg : &known_rid; break;
    case 13: k = &known_enc; break;
    case 20: k = &known_accept; break;
    default: return NULL;
    }
    return memcmp(p, k->name, len) == 0 ? k : NULL; /* the lengths are equal */
}

/* A field of a header list: a known name (and its usual value) points at
 * the static copy, which nghttp2 need not copy. */
static nghttp2_nv list_field(const struct gr_hdr *h)
{
    nghttp2_nv nv = nv_make(h->name, h->namelen, h->value, h->valuelen);
    const struct nv_known *k = known_field(h->name, h->namelen);
    if (k == NULL)
        return nv;
    nv.name = (uint8_t *)k->name;
    nv.flags = NO_COPY_NAME;
    if (k->value != NULL && same(h->value, h->valuelen, k->value, k->valuelen)) {
        nv.value = (uint8_t *)k->value;
        nv.flags = NO_COPY_BOTH;
    }
    return nv;
}

/* A field with a static name (and, with value_static, a static value). */
static nghttp2_nv lit_field(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
                            bool value_static)
{
    nghttp2_nv nv = nv_make(name, namelen, value, valuelen);
    nv.flags = value_static ? NO_COPY_BOTH : NO_COPY_NAME;
    return nv;
}

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
        nva[k] = list_field(h);
        /* A request id is new on every call: in the HPACK dynamic table it
         * would only evict what repeats (and cost an insertion each call). */
        if (nva[k].name == (const uint8_t *)known_rid.name)
            nva[k].flags |= NGHTTP2_NV_FLAG_NO_INDEX;
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
    bool ct_static = same(ct, ctlen, known_ct.value, known_ct.valuelen);
    if (ct_static)
        ct = (const uint8_t *)known_ct.value;
    bool ok = status[0] == '2' && status[1] == '0' && status[2] == '0' && status[3] == '\0';
    nva[k++] = ok ? lit_field(NV_LIT(":status"), NV_LIT("200"), true)
                  : lit_field(NV_LIT(":status"), (const uint8_t *)status, strlen(status), false);
    if (add_ct)
        nva[k++] = lit_field(NV_LIT("content-type"), ct, ctlen, ct_static);
    for (uint32_t i = 0; i < l->n; i++) {
        const struct gr_hdr *h = &l->v[i];
        if (h->namelen == 0 || (r->web && name_is(h, "content-length", 14)))
            continue;
        if (r->web && name_is(h, "content-type", 12))
            nva[k++] = lit_field(NV_LIT("content-type"), ct, ctlen, ct_static);
        else
            nva[k++] = list_field(h);
    }
    if (r->cors != NULL) {
        nva[k++] = lit_field(NV_LIT("access-control-allow-origin"), r->origin->value, r->origin->valuelen, false);
        nva[k++] = lit_field(NV_LIT("access-control-expose-headers"), (const uint8_t *)r->cors->expose_value,
                             strlen(r->cors->expose_value), false);
        if (r->cors->allow_credentials)
            nva[k++] = lit_field(NV_LIT("access-control-allow-credentials"), NV_LIT("true"), true);
        nva[k++] = lit_field(NV_LIT("vary"), NV_LIT("origin"), true);
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
        nva[4] = lit_field(NV_LIT("grpc-timeout"), (const uint8_t *)v, vlen, false);
    }
    const struct gr_hdr *m = r->method;
    nva[0] = m->value && !same(m->value, m->valuelen, "POST", 4)
                 ? lit_field(NV_LIT(":method"), m->value, m->valuelen, false)
                 : lit_field(NV_LIT(":method"), NV_LIT("POST"), true);
    nva[1] = r->https ? lit_field(NV_LIT(":scheme"), NV_LIT("https"), true)
                      : lit_field(NV_LIT(":scheme"), NV_LIT("http"), true);
    /* The fallback is the endpoint's address, which a reload may free
     * while the frame waits: copied. */
    nva[2] = r->authority->value
                 ? lit_field(NV_LIT(":authority"), r->authority->value, r->authority->valuelen, false)
                 : lit_field(NV_LIT(":authority"), (const uint8_t *)r->fallback, strlen(r->fallback), false);
    nva[3] = lit_field(NV_LIT(":path"), r->path->value, r->path->valuelen, false);
    return nva;
}
