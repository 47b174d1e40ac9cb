/* HEADERS name/value arrays of a call (see include/grelay/nv.h). */
#include "grelay/nv.h"
#include "grelay/grpc.h"

#include <string.h>

/* Flags for a name, a value or both that are static strings. */
#define NO_COPY_NAME NGHTTP2_NV_FLAG_NO_COPY_NAME
#define NO_COPY_BOTH (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* Names (and the values they usually have) that most calls carry, as
 * static strings: nghttp2 takes them without copying or lower-casing them
 * (NGHTTP2_NV_FLAG_NO_COPY_*), which is safe only for memory that outlives
 * every frame still queued; the call's arenas do not always do (a stream
 * can be freed while frames it submitted wait). Compared with constant
 * lengths, so that the compiler turns each compare into a few loads. */
#define IS(p, lit) (memcmp(p, lit, sizeof(lit) - 1) == 0)
#define STATIC_NAME(lit) (nv->name = (uint8_t *)(lit), nv->flags = NO_COPY_NAME)
#define STATIC_VALUE(lit)                                                                                              \
    do {                                                                                                               \
        if (nv->valuelen == sizeof(lit) - 1 && IS(nv->value, lit)) {                                                   \
            nv->value = (uint8_t *)(lit);                                                                              \
            nv->flags = NO_COPY_BOTH;                                                                                  \
        }                                                                                                              \
    } while (0)

/* nv, a field of a header list: a known name (and its usual value) points
 * at the static copy. */
static void intern(nghttp2_nv *nv)
{
    const uint8_t *p = nv->name;
    switch (nv->namelen) {
    case 2:
        if (IS(p, "te")) {
            STATIC_NAME("te");
            STATIC_VALUE("trailers");
        }
        break;
    case 10:
        if (IS(p, "user-agent"))
            STATIC_NAME("user-agent");
        break;
    case 11:
        if (IS(p, "grpc-status")) {
            STATIC_NAME("grpc-status");
            STATIC_VALUE("0");
        }
        break;
    case 12:
        if (IS(p, "content-type")) {
            STATIC_NAME("content-type");
            STATIC_VALUE("application/grpc");
        } else if (IS(p, "grpc-message")) {
            STATIC_NAME("grpc-message");
        } else if (IS(p, "x-request-id")) {
            /* A request id is new on every call: in the HPACK dynamic table
             * it would only evict what repeats (and cost an insertion each
             * call). */
            STATIC_NAME("x-request-id");
            nv->flags |= NGHTTP2_NV_FLAG_NO_INDEX;
        }
        break;
    case 13:
        if (IS(p, "grpc-encoding"))
            STATIC_NAME("grpc-encoding");
        break;
    case 20:
        if (IS(p, "grpc-accept-encoding")) {
            STATIC_NAME("grpc-accept-encoding");
            STATIC_VALUE("identity,deflate,gzip");
        }
        break;
    default: break;
    }
}

static nghttp2_nv list_field(const struct gr_hdr *h)
{
    nghttp2_nv nv = nv_make(h->name, h->namelen, h->value, h->valuelen);
    intern(&nv);
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
        nva[k++] = list_field(h);
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
    bool ct_static = ctlen == 16 && IS(ct, "application/grpc");
    if (ct_static)
        ct = (const uint8_t *)"application/grpc";
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
    nva[0] = m->value && !(m->valuelen == 4 && IS(m->value, "POST"))
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
