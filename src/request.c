/* The request head of a call: collected, checked, routed, admitted (see
 * include/grelay/request.h). */
#include "grelay/request.h"
#include "grelay/stats.h"
#include "grelay/cors.h"
#include "grelay/downstream.h"
#include "grelay/nv.h"
#include "grelay/router.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <string.h>

static inline bool name_is(const uint8_t *name, size_t namelen, const char *lit, size_t litlen)
{
    return namelen == litlen && memcmp(name, lit, litlen) == 0;
}
#define NAME_IS(lit) name_is(name, namelen, lit, sizeof(lit) - 1)

static int set_pseudo(struct stream *s, struct gr_hdr *h, const uint8_t *value, size_t len)
{
    char *v = arena_strndup(&s->arena, (const char *)value, len);
    if (v == NULL)
        return GR_ERR_NOMEM;
    h->value = (const uint8_t *)v;
    h->valuelen = (uint32_t)len;
    return GR_OK;
}

/* Stores a field's value in h (a pseudo header) or adds it to l. */
static int keep(struct stream *s, struct gr_hdr *h, struct hdr_list *l, const uint8_t *name, size_t namelen,
                const uint8_t *value, size_t valuelen)
{
    return h != NULL ? set_pseudo(s, h, value, valuelen) : headers_add(l, &s->arena, name, namelen, value, valuelen);
}

/* Which listener limit a request header block passed (s->req_over). */
enum req_over {
    REQ_OVER_NONE,   /* within both */
    REQ_OVER_BYTES,  /* max_request_headers */
    REQ_OVER_FIELDS, /* max_request_header_fields */
};

/* Answers a call whose head (or trailers) passed a limit, naming it. */
static void refuse(struct stream *s, bool trailers)
{
    const struct gr_listener_cfg *lc = s->down->cfg;
    char msg[160];
    stats_limit_hit(s->down->io.w->stats, lc, LIMIT_HEADERS);
    if (s->req_over == REQ_OVER_FIELDS)
        snprintf(msg, sizeof(msg), "request %s exceed the listener's limit of %u fields",
                 trailers ? "trailers" : "headers", lc->max_request_header_fields);
    else
        snprintf(msg, sizeof(msg), "request %s exceed the listener's limit of %u bytes (32 + name + value a field)",
                 trailers ? "trailers" : "headers", lc->max_request_headers);
    (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, msg);
}

/* A field past a limit: dropped, never copied. The first one names the
 * limit; trailers are answered at once (the call is under way), a head
 * when it is complete (request_on_headers_done), so the client reads why.
 * Twice past a limit the block is not worth reading on: GR_ERR_LIMIT. */
static int over_limit(struct stream *s, uint64_t bytes, uint32_t fields)
{
    const struct gr_listener_cfg *lc = s->down->cfg;
    if (s->req_over == REQ_OVER_NONE) {
        s->req_over = fields > lc->max_request_header_fields ? REQ_OVER_FIELDS : REQ_OVER_BYTES;
        if (s->req_state != REQ_HEADERS)
            refuse(s, true);
    }
    if (bytes > 2 * (uint64_t)lc->max_request_headers || fields > 2 * (uint64_t)lc->max_request_header_fields)
        return GR_ERR_LIMIT;
    return GR_OK;
}

int request_on_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    /* Every field counts, kept or not, as RFC 9113 6.5.2 counts it for
     * the SETTINGS_MAX_HEADER_LIST_SIZE we advertise. */
    const struct gr_listener_cfg *lc = s->down->cfg;
    uint64_t bytes = (uint64_t)s->req_header_bytes + HEADERS_FIELD_OVERHEAD + namelen + valuelen;
    uint32_t fields = s->req_header_fields + (s->req_header_fields < UINT32_MAX);
    s->req_header_bytes = bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)bytes;
    s->req_header_fields = fields;
    if (s->req_over != REQ_OVER_NONE || bytes > lc->max_request_headers || fields > lc->max_request_header_fields)
        return over_limit(s, bytes, fields);
    if (s->req_state != REQ_HEADERS) {
        if (name[0] == ':' || headers_hop_by_hop(name, namelen, value, valuelen))
            return GR_OK;
        return keep(s, NULL, &s->req_trailers, name, namelen, value, valuelen);
    }
    if (name[0] == ':') {
        if (NAME_IS(":path"))
            return keep(s, &s->path, NULL, name, namelen, value, valuelen);
        if (NAME_IS(":authority"))
            return keep(s, &s->authority, NULL, name, namelen, value, valuelen);
        if (NAME_IS(":method"))
            return set_pseudo(s, &s->method, value, valuelen);
        return GR_OK; /* :scheme is rewritten for the upstream */
    }
    if (NAME_IS("grpc-timeout"))
        return set_pseudo(s, &s->grpc_timeout, value, valuelen);
    if (NAME_IS("host")) {
        if (s->authority.value == NULL)
            return keep(s, &s->authority, NULL, name, namelen, value, valuelen);
        return GR_OK;
    }
    if (headers_hop_by_hop(name, namelen, value, valuelen))
        return GR_OK;
    return keep(s, NULL, &s->req_hdrs, name, namelen, value, valuelen);
}

/* gRPC-Web: the request becomes native gRPC upstream. */
static int web_rewrite_request(struct stream *s)
{
    for (uint32_t i = 0; i < s->req_hdrs.n; i++) {
        struct gr_hdr *h = &s->req_hdrs.v[i];
        if (name_is(h->name, h->namelen, "content-type", 12)) {
            h->value = (const uint8_t *)s->web->upstream_type;
            h->valuelen = (uint32_t)strlen(s->web->upstream_type);
        }
    }
    /* The body changes length in -text mode; HTTP/1.1 framing is ours. */
    headers_remove(&s->req_hdrs, "content-length");
    if (headers_find(&s->req_hdrs, "te") == NULL)
        return headers_add(&s->req_hdrs, &s->arena, NV_LIT("te"), NV_LIT("trailers"));
    return GR_OK;
}

static int add_str(struct stream *s, struct hdr_list *l, const char *name, const char *value)
{
    return headers_add(l, &s->arena, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value));
}

/* CORS preflight (OPTIONS with Access-Control-Request-Method), answered here. */
static void answer_preflight(struct stream *s, const struct gr_cors_cfg *pol, const struct gr_hdr *origin)
{
    stats_add(stats_block(s->down->io.w->stats, s->down->cfg->stats), L_PREFLIGHTS, 1);
    if (pol == NULL) {
        (void)stream_reply_http(s, "403", "no CORS policy for this route\n", NULL);
        return;
    }
    if (!cors_origin_allowed(pol, (const char *)origin->value, origin->valuelen)) {
        s->cors = NULL;
        (void)stream_reply_http(s, "403", "origin not allowed by the CORS policy\n", NULL);
        return;
    }
    struct hdr_list extra;
    headers_init(&extra);
    int rc = add_str(s, &extra, "access-control-allow-methods", pol->methods_value);
    if (rc == GR_OK)
        rc = add_str(s, &extra, "access-control-allow-headers", pol->headers_value);
    if (rc == GR_OK && pol->max_age_value != NULL)
        rc = add_str(s, &extra, "access-control-max-age", pol->max_age_value);
    if (rc != GR_OK)
        (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
    else
        (void)stream_reply_http(s, "200", NULL, &extra);
}

/* On a grpc_web listener: the codec for gRPC-Web content types, the CORS
 * grant for the Origin. Returns false when the call was answered here (a
 * preflight) or failed. */
static bool web_and_cors(struct stream *s, const struct gr_vhost_cfg *vh)
{
    const struct gr_hdr *ct = headers_find(&s->req_hdrs, "content-type");
    struct grpcweb *web = arena_alloc(&s->arena, sizeof(*web));
    if (ct != NULL && web != NULL && grpcweb_detect(web, &s->arena, ct->value, ct->valuelen)) {
        s->web = web;
        s->req.text = web->text;
        if (web_rewrite_request(s) != GR_OK) {
            (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
            return false;
        }
    }
    const struct gr_hdr *origin = headers_find(&s->req_hdrs, "origin");
    const struct gr_cors_cfg *pol = cors_policy(vh, s->route);
    if (origin != NULL && cors_origin_allowed(pol, (const char *)origin->value, origin->valuelen)) {
        s->cors = pol;
        s->origin = *origin;
    }
    if (origin != NULL && s->method.value != NULL && s->method.valuelen == 7 &&
        memcmp(s->method.value, "OPTIONS", 7) == 0 &&
        headers_find(&s->req_hdrs, "access-control-request-method") != NULL) {
        answer_preflight(s, pol, origin);
        return false;
    }
    return true;
}

/* The deadline: the client's grpc-timeout capped by the route's
 * max_grpc_timeout, or the route's timeout when the client sent none; fixed
 * now, so that waiting for a connection counts. False when the call failed. */
static bool set_deadline(struct stream *s, bool client_timeout, uint64_t timeout_us)
{
    const struct gr_route_cfg *r = s->route;
    if (client_timeout && r->max_grpc_timeout_ms && timeout_us > r->max_grpc_timeout_ms * 1000)
        timeout_us = r->max_grpc_timeout_ms * 1000;
    if (!client_timeout)
        timeout_us = r->timeout_ms * 1000;
    if (!client_timeout && timeout_us == 0)
        return true;
    s->deadline_us = gr_now_us() + timeout_us;
    if (timeout_us == 0) {
        (void)stream_fail(s, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the call started (grpc-timeout 0)");
        return false;
    }
    return true;
}

/* A token of the call's route's rate_limit, from this worker's bucket:
 * the route's rate and burst split over the snapshot's workers. */
static bool rate_take(struct stream *s)
{
    const struct gr_rate_limit_cfg *rl = &s->route->rate_limit;
    struct worker *w = s->down->io.w;
    uint32_t workers = s->snap != NULL && s->snap->cfg->workers > 0 ? s->snap->cfg->workers : 1;
    double rate = (double)rl->requests_per_second / workers;
    double burst = (double)rl->burst / workers < 1.0 ? 1.0 : (double)rl->burst / workers;
    struct gr_rate_bucket *b = &rl->buckets[w->id % GR_RATE_BUCKETS];
    double now = ev_now(w->loop);
    b->tokens = b->tokens < 0 ? burst : b->tokens + (now - b->at) * rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at = now;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/* Whether the call may start (the answer is sent here otherwise). */
static bool admit(struct stream *s, const char *auth, const char *path, bool *client_timeout, uint64_t *timeout_us)
{
    char msg[512];
    if (s->down->http1 && s->web == NULL) {
        (void)stream_reply_http(s, "415",
                                "grelay takes gRPC-Web over HTTP/1.1 (content-type application/grpc-web...); "
                                "native gRPC needs HTTP/2\n",
                                NULL);
        return false;
    }
    if (s->req_over != REQ_OVER_NONE) {
        refuse(s, false);
        return false;
    }
    if (s->down->http1 && worker_overloaded()) { /* no REFUSED_STREAM in HTTP/1.1 (h2_server.c refuses h2 streams) */
        stats_limit_hit(s->down->io.w->stats, s->down->cfg, LIMIT_OVERLOAD);
        (void)stream_fail(s, GRPC_UNAVAILABLE, "grelay is overloaded (overload.max_heap): retry later or elsewhere");
        return false;
    }
    if (s->down->io.w->stopping) {
        (void)stream_fail(s, GRPC_UNAVAILABLE, "grelay is shutting down");
        return false;
    }
    *client_timeout = s->grpc_timeout.value != NULL;
    if (*client_timeout && grpc_timeout_parse(s->grpc_timeout.value, s->grpc_timeout.valuelen, timeout_us) != GR_OK) {
        snprintf(msg, sizeof(msg), "malformed grpc-timeout header '%.40s': want 1-8 digits and one of H M S m u n",
                 (const char *)s->grpc_timeout.value);
        (void)stream_fail(s, GRPC_INTERNAL, msg);
        return false;
    }
    if (s->route == NULL) {
        snprintf(msg, sizeof(msg), "no route for %.200s%.200s", auth, path);
        (void)stream_fail(s, GRPC_UNIMPLEMENTED, msg);
        return false;
    }
    if (s->route->rate_limit.set && !rate_take(s)) {
        stats_limit_hit(s->down->io.w->stats, s->down->cfg, LIMIT_RATE);
        stats_add(stats_block(s->down->io.w->stats, s->route->stats), R_RATE_LIMITED, 1);
        snprintf(msg, sizeof(msg), "route %.100s: rate_limit of %u calls per second (burst %u) reached at grelay",
                 s->route->name, s->route->rate_limit.requests_per_second, s->route->rate_limit.burst);
        (void)stream_fail(s, (enum grpc_status)s->route->rate_limit.status, msg);
        return false;
    }
    return true;
}

/* The listener whose routes a new call on d takes: the same listener in the
 * worker's current snapshot when a reload kept it, else d's own (a removed
 * listener's connections go on with the snapshot they began with). The
 * call holds that snapshot until it ends. */
static const struct gr_listener_cfg *pick_snapshot(struct stream *s)
{
    struct worker *w = s->down->io.w;
    const struct gr_listener_cfg *lc = s->down->cfg;
    struct worker_snap *snap = w->snap;
    if (snap != NULL && (lc < snap->cfg->listeners || lc >= snap->cfg->listeners + snap->cfg->n_listeners)) {
        struct worker_snap *own = worker_snap_of(w, lc);
        const struct gr_listener_cfg *now = own ? own->now[lc - own->cfg->listeners] : NULL;
        if (now != NULL)
            lc = now;
        else
            snap = own;
    }
    worker_snap_drop(w, s->snap); /* NULL but for a second header block */
    worker_snap_hold(snap);
    s->snap = snap;
    return lc;
}

/* A random UUID (version 4, RFC 9562) as 36 characters and a NUL, from
 * the worker's xorshift state: no syscall per call. */
static void uuid4(uint64_t *rng, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    uint64_t hi = gr_rand(rng), lo = gr_rand(rng);
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hi >> (8 * i));
        b[8 + i] = (uint8_t)(lo >> (8 * i));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/* An admitted call without x-request-id gets one (request_id.generate),
 * forwarded upstream with the other metadata and logged; one the client
 * sent is kept as it is. False when the call failed (out of memory). */
static bool add_request_id(struct stream *s)
{
    const struct gr_config *cfg = s->snap != NULL ? s->snap->cfg : s->down->io.w->cfg;
    if (cfg == NULL || !cfg->request_id.generate || headers_find(&s->req_hdrs, "x-request-id") != NULL)
        return true;
    char id[37];
    uuid4(&s->down->io.w->rng, id);
    if (headers_add(&s->req_hdrs, &s->arena, NV_LIT("x-request-id"), (const uint8_t *)id, 36) == GR_OK)
        return true;
    (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
    return false;
}

bool request_headers_ready(struct stream *s)
{
    const struct gr_listener_cfg *lc = pick_snapshot(s);
    stream_headers_read(s);
    s->req_header_bytes = s->req_header_fields = 0; /* trailers are a block of their own */
    const char *auth = s->authority.value ? (const char *)s->authority.value : "";
    const char *path = s->path.value ? (const char *)s->path.value : "";
    const struct gr_vhost_cfg *vh = router_find_vhost(lc, auth, s->authority.valuelen);
    s->route = vh ? router_find_route(vh, path, s->path.valuelen, &s->req_hdrs) : NULL;
    if (s->down->cfg->grpc_web && !web_and_cors(s, vh)) /* the connection's mode, whatever a reload says */
        return false;
    bool client_timeout = false;
    uint64_t timeout_us = 0;
    return admit(s, auth, path, &client_timeout, &timeout_us) && set_deadline(s, client_timeout, timeout_us) &&
           add_request_id(s);
}

void request_on_headers_done(struct stream *s)
{
    if (request_headers_ready(s))
        stream_start(s);
}

/* ---- The request body. ---- */

static int queue_web_slice(void *ctx, const uint8_t *p, size_t n, size_t wire)
{
    struct stream *s = ctx;
    return flow_queue(&s->req, &s->down->io.w->chunks, p, n, wire);
}

/* gRPC-Web request bytes: decoded, checked, queued. False when the call failed. */
static bool web_request(struct stream *s, const uint8_t *data, size_t len)
{
    const struct gr_listener_cfg *lc = s->down->cfg;
    const char *why = NULL;
    size_t done;
    struct worker *w = s->down->io.w;
    int rc = grpcweb_request(s->web, data, len, lc->grpc_web_max_request, w->scratch, sizeof(w->scratch),
                             queue_web_slice, s, &done, &why);
    if (rc == GR_OK)
        return true;
    stream_give_back_req(s, len - done); /* what was not queued */
    char msg[160];
    if (rc == GR_ERR_LIMIT)
        snprintf(msg, sizeof(msg), "gRPC-Web request larger than the listener's limit of %u bytes",
                 lc->grpc_web_max_request);
    (void)stream_fail(s, rc == GR_ERR_PROTO ? GRPC_INTERNAL : GRPC_RESOURCE_EXHAUSTED,
                      rc == GR_ERR_PROTO   ? why
                      : rc == GR_ERR_LIMIT ? msg
                                           : "grelay is out of memory");
    return false;
}

void request_on_data(struct stream *s, const uint8_t *data, size_t len)
{
    s->req.received += len;
    if (s->att == ATT_DONE) {
        stream_give_back_req(s, len); /* nobody will take these bytes */
        return;
    }
    if (s->web != NULL) {
        if (!web_request(s, data, len))
            return;
    } else if (flow_queue(&s->req, &s->down->io.w->chunks, data, len, len) != GR_OK) {
        stream_give_back_req(s, len);
        (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
        return;
    }
    stream_req_queued(s);
}
