/* Name/value arrays for the HEADERS frames of a call (nghttp2_nv; the
 * HTTP/1.1 writer reads the same arrays), built in the call's arena from its
 * header lists: the request as it goes upstream, the response as it goes to
 * the client. The names and values point into the arena or at literals. */
#ifndef GRELAY_NV_H
#define GRELAY_NV_H

#include "grelay/arena.h"
#include "grelay/config.h"
#include "grelay/headers.h"

#include <nghttp2/nghttp2.h>

/* A string literal as pointer and length. */
#define NV_LIT(s) (const uint8_t *)(s), sizeof(s) - 1

static inline nghttp2_nv nv_make(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, namelen, valuelen, NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* The fields of l after `extra` free leading entries (*n counts all).
 * NULL when out of memory. */
nghttp2_nv *nv_from_list(struct arena *a, const struct hdr_list *l, size_t extra, size_t *n);

/* How a response's fields are shaped for the client. */
struct nv_resp {
    const char *content_type;       /* gRPC-Web: the client's type, said back; native: application/grpc */
    bool web;                       /* gRPC-Web: swap content-type, drop content-length */
    const struct gr_cors_cfg *cors; /* the CORS policy that granted the Origin, or NULL */
    const struct gr_hdr *origin;    /* the granted Origin (with cors) */
};
/* :status, then (with add_ct) our content-type, then l as r says, then the
 * CORS grant. */
nghttp2_nv *nv_response(struct arena *a, const char *status, const struct hdr_list *l, bool add_ct,
                        const struct nv_resp *r, size_t *n);

/* The pseudo headers and timeout of a request going upstream. */
struct nv_req {
    const struct gr_hdr *method;    /* :method (value NULL: POST) */
    const struct gr_hdr *authority; /* :authority (value NULL: fallback) */
    const char *fallback;           /* the endpoint's address */
    const struct gr_hdr *path;      /* :path */
    bool https;                     /* :scheme https (TLS to the upstream) */
    uint64_t timeout_us;            /* grpc-timeout to send; 0: none */
};
/* :method, :scheme, :authority, :path, grpc-timeout (when set), then hdrs. */
nghttp2_nv *nv_request(struct arena *a, const struct hdr_list *hdrs, const struct nv_req *r, size_t *n);

#endif
