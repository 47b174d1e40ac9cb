/* One call, from request HEADERS to the last frame either way.
 *
 * Bytes move only as fast as the slower side takes them: request DATA is
 * queued in s->req and given back to the client's window (consume) only when
 * the upstream data provider has taken it; response DATA likewise through
 * s->resp. Providers defer when their queue is empty and are resumed when
 * bytes arrive. */
#include "grelay/stream.h"
#include "grelay/h2_client.h"
#include "grelay/cors.h"
#include "grelay/downstream.h"
#include "grelay/log.h"
#include "grelay/pool.h"
#include "grelay/router.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Response header bytes we accept from a backend before resetting. */
#define MAX_RESPONSE_HEADERS (256 * 1024)

static inline struct worker *stream_worker(const struct stream *s) { return s->down->io.w; }

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents);
static void on_attempt_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void start_attempt(struct stream *s, bool retry);
static void detach_up(struct stream *s, bool reset);
static bool web_request_bytes(struct stream *s, const uint8_t *data, size_t len, size_t wire);

/* How a failed attempt may be retried. */
enum retry_kind {
    RETRY_TRANSPARENT, /* nothing reached the application: always, within bounds */
    RETRY_STATUS,      /* a status in the route's retry_on */
    RETRY_PER_TRY,     /* the route's per-try timeout fired */
};

#define LIT(s) (const uint8_t *)(s), sizeof(s) - 1

static inline nghttp2_nv mknv(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, namelen, valuelen, NGHTTP2_NV_FLAG_NONE};
    return nv;
}

static inline bool name_is(const uint8_t *name, size_t namelen, const char *lit, size_t litlen)
{
    return namelen == litlen && memcmp(name, lit, litlen) == 0;
}
#define NAME_IS(lit) name_is(name, namelen, lit, sizeof(lit) - 1)

/* Freed streams a worker keeps for the next calls (no calloc per call).
 * With hundreds of calls in flight, a flush can end more calls at once than
 * a small cache holds, and the next read then callocs them all again; the
 * idle sweep gives back what went unused (stream_cache_trim). With
 * hibernate_after: 0 there is no sweep and the cap bounds it (~2 MiB). */
#define MAX_FREE_STREAMS 1024

struct stream *stream_new(struct downstream *d, int32_t id)
{
    struct worker *w = d->io.w;
    struct stream *s = w->free_streams;
    if (s != NULL) {
        w->free_streams = s->next_free;
        if (--w->n_free_streams < w->free_streams_low)
            w->free_streams_low = w->n_free_streams;
        memset(s, 0, offsetof(struct stream, arena_first));
    } else if ((s = calloc(1, sizeof(*s))) == NULL) {
        return NULL;
    }
    s->down = d;
    s->id = id;
    w->n_streams++;
    w->streams_begun++;
    arena_init_with(&s->arena, 2048, s->arena_first, sizeof(s->arena_first));
    hdr_list_init(&s->req_hdrs);
    hdr_list_init(&s->req_trailers);
    hdr_list_init(&s->resp_hdrs);
    hdr_list_init(&s->resp_trailers);
    buf_init(&s->req);
    buf_init(&s->resp);
    gr_list_init(&s->up_link);
    gr_list_insert_tail(&d->streams, &s->down_link);
    ev_timer_init(&s->deadline_timer, on_deadline, 0.0, 0.0);
    ev_timer_init(&s->attempt_timer, on_attempt_timer, 0.0, 0.0);
    s->replay = true;
    return s;
}

static int set_pseudo(struct stream *s, struct gr_hdr *h, const uint8_t *value, size_t len)
{
    char *v = arena_strndup(&s->arena, (const char *)value, len);
    if (v == NULL)
        return GR_ERR_NOMEM;
    h->value = (const uint8_t *)v;
    h->valuelen = (uint32_t)len;
    return GR_OK;
}

int stream_on_req_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                         size_t valuelen)
{
    if (s->headers_too_big)
        return GR_OK;
    size_t total = s->req_hdrs.bytes + s->req_trailers.bytes + s->path.valuelen + s->authority.valuelen +
                   namelen + valuelen;
    if (total > s->down->cfg->max_request_headers) {
        s->headers_too_big = true;
        return GR_OK;
    }
    if (s->req_headers_done) {
        if (name[0] == ':' || hdr_is_hop_by_hop(name, namelen, value, valuelen))
            return GR_OK;
        return hdr_list_add(&s->req_trailers, &s->arena, name, namelen, value, valuelen);
    }
    if (name[0] == ':') {
        if (NAME_IS(":path"))
            return set_pseudo(s, &s->path, value, valuelen);
        if (NAME_IS(":authority"))
            return set_pseudo(s, &s->authority, value, valuelen);
        if (NAME_IS(":method"))
            return set_pseudo(s, &s->method, value, valuelen);
        return GR_OK; /* :scheme is rewritten for the upstream */
    }
    if (NAME_IS("grpc-timeout"))
        return set_pseudo(s, &s->grpc_timeout, value, valuelen);
    if (NAME_IS("host")) {
        if (s->authority.value == NULL)
            return set_pseudo(s, &s->authority, value, valuelen);
        return GR_OK;
    }
    if (hdr_is_hop_by_hop(name, namelen, value, valuelen))
        return GR_OK;
    return hdr_list_add(&s->req_hdrs, &s->arena, name, namelen, value, valuelen);
}

/* Builds name/value pairs for nghttp2; the array lives in the arena. */
static nghttp2_nv *nv_from_list(struct stream *s, const struct hdr_list *l, size_t extra, size_t *n)
{
    nghttp2_nv *nva = arena_alloc(&s->arena, (l->n + extra) * sizeof(*nva));
    if (nva == NULL)
        return NULL;
    size_t k = extra;
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].namelen > 0)
            nva[k++] = mknv(l->v[i].name, l->v[i].namelen, l->v[i].value, l->v[i].valuelen);
    *n = k;
    return nva;
}

/* Response headers for the client: :status, then (with add_ct) our
 * content-type, then l, with gRPC-Web's content-type swapped back and
 * content-length dropped, then the CORS grant. Arena memory. */
static nghttp2_nv *resp_nv(struct stream *s, const char *status, const struct hdr_list *l, bool add_ct, size_t *n)
{
    nghttp2_nv *nva = arena_alloc(&s->arena, (l->n + 7) * sizeof(*nva));
    if (nva == NULL)
        return NULL;
    const char *ct = s->web ? s->web->content_type : "application/grpc";
    size_t k = 0;
    nva[k++] = mknv(LIT(":status"), (const uint8_t *)status, strlen(status));
    if (add_ct)
        nva[k++] = mknv(LIT("content-type"), (const uint8_t *)ct, strlen(ct));
    for (uint32_t i = 0; i < l->n; i++) {
        const struct gr_hdr *h = &l->v[i];
        if (h->namelen == 0)
            continue;
        if (s->web && name_is(h->name, h->namelen, "content-type", 12)) {
            nva[k++] = mknv(LIT("content-type"), (const uint8_t *)ct, strlen(ct));
            continue;
        }
        if (s->web && name_is(h->name, h->namelen, "content-length", 14))
            continue;
        nva[k++] = mknv(h->name, h->namelen, h->value, h->valuelen);
    }
    if (s->cors != NULL) {
        nva[k++] = mknv(LIT("access-control-allow-origin"), s->origin.value, s->origin.valuelen);
        nva[k++] = mknv(LIT("access-control-expose-headers"), (const uint8_t *)s->cors->expose_value,
                        strlen(s->cors->expose_value));
        if (s->cors->allow_credentials)
            nva[k++] = mknv(LIT("access-control-allow-credentials"), LIT("true"));
        nva[k++] = mknv(LIT("vary"), LIT("origin"));
    }
    *n = k;
    return nva;
}

/* Answers with a plain HTTP status and text (CORS preflights, HTTP/1.1
 * requests that are not gRPC-Web). extra are added headers. */
static void reply_http(struct stream *s, const char *status, const char *text, const nghttp2_nv *extra,
                       size_t n_extra)
{
    struct hdr_list none;
    hdr_list_init(&none);
    detach_up(s, true);
    size_t n;
    nghttp2_nv *base = resp_nv(s, status, &none, false, &n);
    nghttp2_nv *nva = base ? arena_alloc(&s->arena, (n + n_extra + 1) * sizeof(*nva)) : NULL;
    if (nva == NULL) {
        s->down->ops->reset(s->down, s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    memcpy(nva, base, n * sizeof(*nva));
    if (n_extra > 0)
        memcpy(nva + n, extra, n_extra * sizeof(*nva));
    n += n_extra;
    bool body = text != NULL && text[0] != '\0';
    if (body) {
        nva[n++] = mknv(LIT("content-type"), LIT("text/plain; charset=utf-8"));
        buf_append(&s->resp, &stream_worker(s)->chunks, (const uint8_t *)text, strlen(text));
    }
    s->web = NULL; /* a plain HTTP answer: no gRPC-Web framing */
    s->resp_started = true;
    s->resp_ended = true;
    s->down->ops->respond(s->down, s, nva, n, !body);
    conn_want_flush(&s->down->io);
}

/* CORS preflight (OPTIONS with Access-Control-Request-Method), answered here. */
static void answer_preflight(struct stream *s, const struct gr_cors_cfg *pol, const struct gr_hdr *origin)
{
    if (!cors_origin_allowed(pol, (const char *)origin->value, origin->valuelen)) {
        s->cors = NULL;
        reply_http(s, "403", "origin not allowed by the CORS policy\n", NULL, 0);
        return;
    }
    nghttp2_nv extra[4];
    size_t n = 0;
    extra[n++] = mknv(LIT("access-control-allow-methods"), (const uint8_t *)pol->methods_value,
                      strlen(pol->methods_value));
    extra[n++] = mknv(LIT("access-control-allow-headers"), (const uint8_t *)pol->headers_value,
                      strlen(pol->headers_value));
    if (pol->max_age_value != NULL)
        extra[n++] = mknv(LIT("access-control-max-age"), (const uint8_t *)pol->max_age_value,
                          strlen(pol->max_age_value));
    reply_http(s, "200", NULL, extra, n);
}


/* Lets go of the upstream side: leaves the pool's line, or resets (when
 * reset is set and the upstream stream is still open) and detaches from the
 * upstream connection. Idempotent. */
static void detach_up(struct stream *s, bool reset)
{
    if (s->waiting)
        pool_leave(s->pool, s);
    struct upconn *u = s->up;
    if (u != NULL) {
        if (!s->up_closed && s->up_id > 0 && u->h2 != NULL) {
            nghttp2_session_set_stream_user_data(u->h2, s->up_id, NULL);
            if (reset)
                nghttp2_submit_rst_stream(u->h2, NGHTTP2_FLAG_NONE, s->up_id, NGHTTP2_CANCEL);
        }
        /* Response bytes still queued here hold the upstream connection's
         * window: give it back now that the stream no longer counts. */
        if (s->resp.len > 0 && u->h2 != NULL)
            nghttp2_session_consume_connection(u->h2, s->resp.len);
        gr_list_remove(&s->up_link);
        s->up = NULL;
        upconn_stream_detached(u);
        conn_want_flush(&u->io);
    }
    s->up_closed = true;
    if (s->pool != NULL) {
        struct pool *p = s->pool;
        s->pool = NULL;
        if (!p->retired) {
            balancer_finished(&p->wc->lb, p->index);
            pool_dispatch(p);
        }
    }
}

static void resume_resp(struct stream *s)
{
    if (s->resp_deferred && s->resp_started) {
        s->resp_deferred = false;
        s->down->ops->resume(s->down, s);
    }
    conn_want_flush(&s->down->io);
}

static void resume_req(struct stream *s)
{
    if (s->req_deferred && s->up != NULL && s->up_id > 0) {
        s->req_deferred = false;
        nghttp2_session_resume_data(s->up->h2, s->up_id);
        conn_want_flush(&s->up->io);
    }
}

/* Replaces resp_trailers with a gRPC status. */
static int set_status_trailers(struct stream *s, enum grpc_status status, const char *msg)
{
    char code[8];
    int n = snprintf(code, sizeof(code), "%d", (int)status);
    size_t mlen = 0;
    char *enc = grpc_message_encode(&s->arena, msg, &mlen);
    if (enc == NULL)
        return GR_ERR_NOMEM;
    hdr_list_init(&s->resp_trailers);
    if (hdr_list_add(&s->resp_trailers, &s->arena, LIT("grpc-status"), (const uint8_t *)code, (size_t)n) ||
        hdr_list_add(&s->resp_trailers, &s->arena, LIT("grpc-message"), (const uint8_t *)enc, mlen))
        return GR_ERR_NOMEM;
    return GR_OK;
}

void stream_fail(struct stream *s, enum grpc_status status, const char *msg)
{
    ev_timer_stop(stream_worker(s)->loop, &s->attempt_timer);
    detach_up(s, true);
    if (s->resp_ended && s->resp_started)
        return; /* the client already has (or is getting) a complete answer */
    log_debug("stream %d %.*s: %s (%s)", s->id, (int)s->path.valuelen, s->path.value ? (const char *)s->path.value : "",
              grpc_status_name(status), msg);
    if (set_status_trailers(s, status, msg) != GR_OK) {
        s->down->ops->reset(s->down, s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->resp_ended = true;
    if (!s->resp_started) {
        /* Trailers-only: one HEADERS frame with END_STREAM. */
        size_t n;
        nghttp2_nv *nva = resp_nv(s, "200", &s->resp_trailers, true, &n);
        if (nva == NULL) {
            s->down->ops->reset(s->down, s, NGHTTP2_INTERNAL_ERROR);
            return;
        }
        s->resp_started = true;
        s->down->ops->respond(s->down, s, nva, n, true);
        conn_want_flush(&s->down->io);
        return;
    }
    resume_resp(s);
}

/* gRPC-Web: the request becomes native gRPC upstream. */
static void web_rewrite_request(struct stream *s)
{
    for (uint32_t i = 0; i < s->req_hdrs.n; i++) {
        struct gr_hdr *h = &s->req_hdrs.v[i];
        if (name_is(h->name, h->namelen, "content-type", 12)) {
            h->value = (const uint8_t *)s->web->upstream_type;
            h->valuelen = (uint32_t)strlen(s->web->upstream_type);
        }
    }
    /* The body changes length in -text mode; HTTP/1.1 framing is ours. */
    hdr_list_remove(&s->req_hdrs, "content-length");
    if (hdr_list_find(&s->req_hdrs, "te") == NULL)
        hdr_list_add(&s->req_hdrs, &s->arena, LIT("te"), LIT("trailers"));
}

void stream_on_req_headers_done(struct stream *s)
{
    struct worker *w = stream_worker(s);
    const struct gr_listener_cfg *lc = s->down->cfg;
    char msg[512];
    s->req_headers_done = true;
    const char *auth = s->authority.value ? (const char *)s->authority.value : "";
    const char *path = s->path.value ? (const char *)s->path.value : "";
    const struct gr_vhost_cfg *vh = router_find_vhost(lc, auth, s->authority.valuelen);
    s->route = vh ? router_find_route(vh, path, s->path.valuelen, &s->req_hdrs) : NULL;
    if (lc->grpc_web) {
        const struct gr_hdr *ct = hdr_list_find(&s->req_hdrs, "content-type");
        struct grpcweb *web = arena_alloc(&s->arena, sizeof(*web));
        if (ct != NULL && web != NULL && grpcweb_detect(web, &s->arena, ct->value, ct->valuelen)) {
            s->web = web;
            web_rewrite_request(s);
        }
        const struct gr_hdr *origin = hdr_list_find(&s->req_hdrs, "origin");
        const struct gr_cors_cfg *pol = cors_policy(vh, s->route);
        if (origin != NULL && cors_origin_allowed(pol, (const char *)origin->value, origin->valuelen)) {
            s->cors = pol;
            s->origin = *origin;
        }
        if (origin != NULL && s->method.value != NULL && s->method.valuelen == 7 &&
            memcmp(s->method.value, "OPTIONS", 7) == 0 &&
            hdr_list_find(&s->req_hdrs, "access-control-request-method") != NULL) {
            if (pol == NULL)
                reply_http(s, "403", "no CORS policy for this route\n", NULL, 0);
            else
                answer_preflight(s, pol, origin);
            return;
        }
    }
    if (s->down->http1 && s->web == NULL) {
        reply_http(s, "415",
                   "grelay takes gRPC-Web over HTTP/1.1 (content-type application/grpc-web...); "
                   "native gRPC needs HTTP/2\n",
                   NULL, 0);
        return;
    }
    if (s->headers_too_big) {
        snprintf(msg, sizeof(msg), "request headers exceed the listener's limit of %u bytes",
                 s->down->cfg->max_request_headers);
        stream_fail(s, GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    }
    if (w->stopping) {
        stream_fail(s, GRPC_UNAVAILABLE, "grelay is shutting down");
        return;
    }
    uint64_t timeout_us = 0;
    bool client_timeout = s->grpc_timeout.value != NULL;
    if (client_timeout &&
        grpc_timeout_parse(s->grpc_timeout.value, s->grpc_timeout.valuelen, &timeout_us) != GR_OK) {
        snprintf(msg, sizeof(msg), "malformed grpc-timeout header '%.40s': want 1-8 digits and one of H M S m u n",
                 (const char *)s->grpc_timeout.value);
        stream_fail(s, GRPC_INTERNAL, msg);
        return;
    }
    if (s->route == NULL) {
        snprintf(msg, sizeof(msg), "no route for %.200s%.200s", auth, path);
        stream_fail(s, GRPC_UNIMPLEMENTED, msg);
        return;
    }
    if (client_timeout && s->route->max_grpc_timeout_ms && timeout_us > s->route->max_grpc_timeout_ms * 1000)
        timeout_us = s->route->max_grpc_timeout_ms * 1000;
    if (!client_timeout)
        timeout_us = s->route->timeout_ms * 1000;
    if (client_timeout || timeout_us > 0) {
        /* The deadline is fixed now; waiting for a connection counts against it. */
        s->deadline_us = gr_now_us() + timeout_us;
        ev_timer_set(&s->deadline_timer, (double)timeout_us / 1e6, 0.0);
        ev_timer_start(w->loop, &s->deadline_timer);
        if (timeout_us == 0) {
            stream_fail(s, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the call started (grpc-timeout 0)");
            return;
        }
    }
    start_attempt(s, false);
}

/* The endpoint for an attempt: the balancer's pick, unless it is ejected or
 * (on a retry) the one that just failed, when another will do. */
static size_t pick_endpoint(struct stream *s, struct wcluster *wc, bool retry)
{
    size_t n = wc->n_pools;
    uint64_t now = gr_now_us();
    size_t idx = balancer_pick(&wc->lb);
    if (n == 1)
        return idx;
#define BAD(i) (pool_ejected(wc->pools[i], now) || (retry && (i) == s->last_ep))
    for (size_t tries = 1; tries < 2 * n && BAD(idx); tries++)
        idx = balancer_pick(&wc->lb);
    for (size_t k = 0; k < n && BAD(idx); k++)
        idx = (idx + 1) % n;
    if (retry && idx == s->last_ep)
        idx = (idx + 1) % n; /* everything is ejected: at least try another */
#undef BAD
    return idx;
}

/* Sends the call to an endpoint (first attempt or retry). */
static void start_attempt(struct stream *s, bool retry)
{
    struct worker *w = stream_worker(s);
    struct wcluster *wc = &w->clusters[s->route->cluster->index];
    if (wc->n_pools == 0) {
        stream_fail(s, GRPC_UNAVAILABLE, wc->why_empty);
        return;
    }
    size_t idx = pick_endpoint(s, wc, retry);
    struct pool *p = wc->pools[idx];
    char msg[256];
    s->last_ep = idx;
    s->pool = p;
    balancer_started(&wc->lb, idx);
    uint64_t per_try = s->route->retry.per_try_timeout_ms;
    if (per_try > 0) {
        s->backing_off = false;
        ev_timer_set(&s->attempt_timer, (double)per_try / 1e3, 0.0);
        ev_timer_start(w->loop, &s->attempt_timer);
    }
    int rc = pool_acquire(p, s);
    if (rc == GR_ERR_LIMIT) {
        snprintf(msg, sizeof(msg), "upstream %s of cluster %s: too many calls waiting for a connection",
                 p->ep->address.text, wc->cfg->name);
        stream_fail(s, GRPC_UNAVAILABLE, msg);
    } else if (rc != GR_OK) {
        snprintf(msg, sizeof(msg), "upstream %s of cluster %s: cannot start a connection", p->ep->address.text,
                 wc->cfg->name);
        stream_fail(s, GRPC_UNAVAILABLE, msg);
    }
}

/* The request is no longer replayable: drop what was kept for a retry. */
static void drop_replay(struct stream *s)
{
    if (!s->replay)
        return;
    s->replay = false;
    buf_drain(&s->req, &stream_worker(s)->chunks, s->req_sent);
    s->req_acked -= s->req_sent;
    s->req_sent = 0;
}

/* Forgets the failed attempt's response so the next one starts clean. */
static void reset_for_attempt(struct stream *s)
{
    s->up_closed = false;
    s->up_id = 0;
    s->up_headers_sent = false;
    s->req_sent = 0;
    s->req_deferred = false;
    s->resp_status = 0;
    s->resp_headers_done = false;
    s->resp_ended = false;
    hdr_list_init(&s->resp_hdrs);
    hdr_list_init(&s->resp_trailers);
    buf_clear(&s->resp, &stream_worker(s)->chunks);
}

/* After a failed attempt (already detached or about to be): starts another
 * if the request is replayable, nothing reached the client, the kind of
 * failure allows it, and the deadline leaves room. Returns true if so. */
static bool maybe_retry(struct stream *s, enum grpc_status st, enum retry_kind kind, const char *why)
{
    if (!s->replay || s->resp_started || s->route == NULL || stream_worker(s)->stopping)
        return false;
    const struct gr_retry_cfg *rp = &s->route->retry;
    size_t n = stream_worker(s)->clusters[s->route->cluster->index].n_pools;
    uint64_t delay_us = 0;
    if (kind == RETRY_TRANSPARENT && s->transparent_retries < (n > 2 ? n : 2)) {
        s->transparent_retries++;
    } else if (s->retries < rp->num_retries &&
               (kind == RETRY_PER_TRY || (rp->retry_on_mask & (1u << (unsigned)st)))) {
        /* Exponential backoff with full jitter: uniform in [0, base * 2^retries], capped. */
        uint64_t cap = rp->backoff.base_interval_ms * 1000ull << (s->retries < 16 ? s->retries : 16);
        if (cap > rp->backoff.max_interval_ms * 1000ull)
            cap = rp->backoff.max_interval_ms * 1000ull;
        delay_us = gr_rand(&stream_worker(s)->rng) % (cap + 1);
        s->retries++;
    } else {
        return false;
    }
    if (s->deadline_us && gr_now_us() + delay_us + 1000 >= s->deadline_us)
        return false;
    log_debug("stream %d: %s; retrying (%s, %llu us backoff)", s->id, why,
              kind == RETRY_TRANSPARENT ? "transparent" : "retry_policy", (unsigned long long)delay_us);
    struct worker *w = stream_worker(s);
    ev_timer_stop(w->loop, &s->attempt_timer);
    detach_up(s, true);
    reset_for_attempt(s);
    if (delay_us == 0) {
        start_attempt(s, true);
    } else {
        s->backing_off = true;
        ev_timer_set(&s->attempt_timer, (double)delay_us / 1e6, 0.0);
        ev_timer_start(w->loop, &s->attempt_timer);
    }
    return true;
}

static void on_attempt_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = container_of(t, struct stream, attempt_timer);
    if (s->backing_off) {
        s->backing_off = false;
        start_attempt(s, true);
        return;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "per-try timeout of %llums exceeded at grelay",
             (unsigned long long)s->route->retry.per_try_timeout_ms);
    if (!maybe_retry(s, GRPC_DEADLINE_EXCEEDED, RETRY_PER_TRY, msg))
        stream_fail(s, GRPC_DEADLINE_EXCEEDED, msg);
}

int stream_attach_upstream(struct stream *s, struct upconn *u)
{
    size_t n;
    size_t extra = s->deadline_us ? 5 : 4;
    nghttp2_nv *nva = nv_from_list(s, &s->req_hdrs, extra, &n);
    if (nva == NULL)
        return GR_ERR_NOMEM;
    if (s->deadline_us) {
        /* The time actually left as the headers leave, minus the route's
         * offset (for the way back), but never less than 1ms of what is left.
         * The per-try timeout is grelay's to enforce (as in Envoy): sending it
         * would let the backend race us with its own DEADLINE_EXCEEDED. */
        uint64_t now = gr_now_us();
        uint64_t left = s->deadline_us > now ? s->deadline_us - now : 0;
        uint64_t offset = s->route->grpc_timeout_offset_ms * 1000;
        uint64_t send = left > offset + 1000 ? left - offset : (left < 1000 ? left : 1000);
        if (send == 0)
            send = 1;
        char *v = arena_alloc(&s->arena, 16);
        if (v == NULL)
            return GR_ERR_NOMEM;
        size_t vlen = grpc_timeout_format(send, v);
        nva[4] = mknv(LIT("grpc-timeout"), (const uint8_t *)v, vlen);
    }
    nva[0] = s->method.value ? mknv(LIT(":method"), s->method.value, s->method.valuelen)
                             : mknv(LIT(":method"), LIT("POST"));
    nva[1] = u->io.ssl != NULL || u->pool->wc->cfg->tls.set ? mknv(LIT(":scheme"), LIT("https"))
                                                             : mknv(LIT(":scheme"), LIT("http"));
    nva[2] = s->authority.value ? mknv(LIT(":authority"), s->authority.value, s->authority.valuelen)
                                : mknv(LIT(":authority"), (const uint8_t *)u->pool->ep->address.text,
                                       strlen(u->pool->ep->address.text));
    nva[3] = mknv(LIT(":path"), s->path.value, s->path.valuelen);
    nghttp2_data_provider prd = {.source = {.ptr = s}, .read_callback = upconn_req_read};
    bool body = !s->req_ended || s->req.len > 0 || s->req_trailers.n > 0;
    int32_t id = nghttp2_submit_request(u->h2, NULL, nva, n, body ? &prd : NULL, s);
    if (id < 0) {
        log_warn("upstream %s: cannot submit request: %s", u->pool->ep->address.text, nghttp2_strerror(id));
        return GR_ERR_PROTO;
    }
    s->up = u;
    s->up_id = id;
    gr_list_insert_tail(&u->streams, &s->up_link);
    u->n_streams++;
    conn_want_flush(&u->io);
    return GR_OK;
}

/* gRPC-Web request bytes (decoded): checks the frames and the size limit,
 * then queues them. wire: what they took on the wire (binary mode gives
 * that back to the client on failure; -text mode counts it in
 * req_wire_unacked, given back with the stream). Returns false when the
 * call failed. */
static bool web_request_bytes(struct stream *s, const uint8_t *data, size_t len, size_t wire)
{
    const struct gr_listener_cfg *lc = s->down->cfg;
    char msg[160];
    s->req_body_bytes += len;
    int rc = grpcweb_check_frames(s->web, data, len, lc->grpc_web_max_request);
    if (rc == GR_OK && s->req_body_bytes <= lc->grpc_web_max_request &&
        buf_append(&s->req, &stream_worker(s)->chunks, data, len) == GR_OK)
        return true;
    if (!s->web->text)
        s->down->ops->consume(s->down, s, wire);
    if (rc == GR_ERR_PROTO) {
        stream_fail(s, GRPC_INTERNAL, "malformed gRPC frame in the gRPC-Web request body");
    } else if (rc == GR_OK && s->req_body_bytes <= lc->grpc_web_max_request) {
        stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
    } else {
        snprintf(msg, sizeof(msg), "gRPC-Web request larger than the listener's limit of %u bytes",
                 lc->grpc_web_max_request);
        stream_fail(s, GRPC_RESOURCE_EXHAUSTED, msg);
    }
    return false;
}

void stream_on_req_data(struct stream *s, const uint8_t *data, size_t len)
{
    if (s->up_closed) {
        /* Nobody will take these bytes: drop them and reopen the window. */
        s->down->ops->consume(s->down, s, len);
        return;
    }
    if (s->web != NULL && s->web->text) {
        /* Decode in slices that fit the scratch buffer. */
        const size_t slice = sizeof(stream_worker(s)->scratch) / 4 * 3;
        while (len > 0) {
            size_t wire = len < slice ? len : slice, out_len;
            uint8_t *out = stream_worker(s)->scratch;
            if (grpcweb_decode(s->web, data, wire, out, &out_len) != GR_OK) {
                s->down->ops->consume(s->down, s, len);
                stream_fail(s, GRPC_INTERNAL, "grpc-web-text request body is not valid base64");
                return;
            }
            s->req_wire_unacked += wire;
            if (!web_request_bytes(s, out, out_len, wire))
                return;
            data += wire;
            len -= wire;
        }
    } else if (s->web != NULL) {
        if (!web_request_bytes(s, data, len, len))
            return;
    } else if (buf_append(&s->req, &stream_worker(s)->chunks, data, len) != GR_OK) {
        s->down->ops->consume(s->down, s, len);
        stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
        return;
    }
    resume_req(s);
}

void stream_on_req_end(struct stream *s)
{
    s->req_ended = true;
    if (!s->up_closed)
        resume_req(s);
}

void stream_on_down_close(struct stream *s, uint32_t error_code)
{
    struct worker *w = stream_worker(s);
    if (!s->up_closed && error_code != NGHTTP2_NO_ERROR)
        log_debug("stream %d: client closed it (%s), cancelling upstream", s->id,
                  nghttp2_http2_strerror(error_code));
    ev_timer_stop(w->loop, &s->deadline_timer);
    ev_timer_stop(w->loop, &s->attempt_timer);
    detach_up(s, true);
    /* Request bytes never given back still hold the client's window. */
    size_t unacked = s->web && s->web->text ? s->req_wire_unacked
                     : s->req.len > s->req_acked ? s->req.len - s->req_acked : 0;
    if (unacked > 0)
        s->down->ops->consume(s->down, NULL, unacked);
    buf_clear(&s->req, &w->chunks);
    buf_clear(&s->resp, &w->chunks);
    gr_list_remove(&s->down_link);
    arena_free(&s->arena);
    w->n_streams--;
    if (w->n_free_streams < MAX_FREE_STREAMS) {
        s->next_free = w->free_streams;
        w->free_streams = s;
        w->n_free_streams++;
    } else {
        free(s);
    }
}

size_t stream_cache_trim(struct worker *w)
{
    size_t n = w->free_streams_low;
    for (size_t i = 0; i < n; i++) {
        struct stream *s = w->free_streams;
        w->free_streams = s->next_free;
        free(s);
    }
    w->n_free_streams -= n;
    w->free_streams_low = w->n_free_streams;
    return n;
}

int stream_on_resp_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen)
{
    if (s->resp_hdrs.bytes + s->resp_trailers.bytes + namelen + valuelen > MAX_RESPONSE_HEADERS)
        return GR_ERR_LIMIT;
    if (!s->resp_headers_done) {
        if (NAME_IS(":status")) {
            int st = 0;
            for (size_t i = 0; i < valuelen && i < 3; i++)
                st = st * 10 + (value[i] - '0');
            s->resp_status = st;
            return GR_OK;
        }
        if (name[0] == ':' || hdr_is_hop_by_hop(name, namelen, value, valuelen))
            return GR_OK;
        return hdr_list_add(&s->resp_hdrs, &s->arena, name, namelen, value, valuelen);
    }
    if (name[0] == ':' || hdr_is_hop_by_hop(name, namelen, value, valuelen))
        return GR_OK;
    return hdr_list_add(&s->resp_trailers, &s->arena, name, namelen, value, valuelen);
}

void stream_on_resp_headers_done(struct stream *s, bool end_stream)
{
    if (s->resp_status >= 100 && s->resp_status < 200) {
        /* Informational: wait for the final answer. */
        hdr_list_init(&s->resp_hdrs);
        s->resp_status = 0;
        return;
    }
    s->resp_headers_done = true;
    if (s->resp_started)
        return;
    const struct gr_hdr *gs = hdr_list_find(&s->resp_hdrs, "grpc-status");
    if (gs != NULL && end_stream && s->replay) {
        /* Trailers-only failure: the status is known before anything went
         * to the client, so the route's retry_on may apply. */
        int code = 0;
        for (uint32_t i = 0; i < gs->valuelen && i < 3; i++)
            code = code * 10 + (gs->value[i] - '0');
        char why[64];
        snprintf(why, sizeof(why), "upstream answered %s", grpc_status_name((enum grpc_status)code));
        if (code > 0 && code <= GRPC_UNAUTHENTICATED && maybe_retry(s, (enum grpc_status)code, RETRY_STATUS, why))
            return;
    }
    if (gs == NULL) {
        /* Not a trailers-only gRPC answer: it must be HTTP 200 with a gRPC
         * content-type, or it is a plain HTTP error page from something
         * that is not a gRPC server. */
        const struct gr_hdr *ct = hdr_list_find(&s->resp_hdrs, "content-type");
        bool grpc_ct = ct != NULL && ct->valuelen >= 16 && memcmp(ct->value, "application/grpc", 16) == 0;
        if (s->resp_status != 200 || !grpc_ct) {
            char msg[200];
            snprintf(msg, sizeof(msg), "upstream answered HTTP %d (%.60s), not gRPC", s->resp_status,
                     ct ? (const char *)ct->value : "no content-type");
            enum grpc_status st = s->resp_status != 200 ? grpc_status_from_http(s->resp_status) : GRPC_UNKNOWN;
            if (!maybe_retry(s, st, RETRY_STATUS, msg))
                stream_fail(s, st, msg);
            return;
        }
    }
    char *st = s->resp_status == 200 ? (char *)"200" : arena_alloc(&s->arena, 4);
    size_t n;
    nghttp2_nv *nva = NULL;
    if (st != NULL) {
        if (s->resp_status != 200) {
            int v = s->resp_status % 1000;
            st[0] = (char)('0' + v / 100);
            st[1] = (char)('0' + v / 10 % 10);
            st[2] = (char)('0' + v % 10);
            st[3] = '\0';
        }
        nva = resp_nv(s, st, &s->resp_hdrs, false, &n);
    }
    if (nva == NULL) {
        stream_fail(s, GRPC_INTERNAL, "grelay is out of memory");
        return;
    }
    if (end_stream)
        s->resp_ended = true;
    int rv = s->down->ops->respond(s->down, s, nva, n, end_stream);
    if (rv != 0) {
        log_debug("stream %d: cannot send the response headers", s->id);
        detach_up(s, true);
        return;
    }
    s->resp_started = true;
    drop_replay(s); /* committed: the client has the headers */
    /* The per-try timeout bounds the wait for an answer; once one streams
     * back no retry is possible, and the call's deadline governs the rest. */
    ev_timer_stop(stream_worker(s)->loop, &s->attempt_timer);
    conn_want_flush(&s->down->io);
}

void stream_on_resp_data(struct stream *s, const uint8_t *data, size_t len)
{
    if (!s->resp_started || s->resp_ended) {
        /* DATA before HEADERS is a protocol error nghttp2 already rejects;
         * after our own answer nobody wants it. */
        nghttp2_session_consume(s->up->h2, s->up_id, len);
        return;
    }
    if (buf_append(&s->resp, &stream_worker(s)->chunks, data, len) != GR_OK) {
        nghttp2_session_consume(s->up->h2, s->up_id, len);
        stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
        return;
    }
    resume_resp(s);
}

void stream_on_resp_end(struct stream *s)
{
    if (!s->resp_started) {
        /* END_STREAM with no final HEADERS cannot pass nghttp2; be safe. */
        stream_fail(s, GRPC_INTERNAL, "upstream ended the stream without a response");
        return;
    }
    s->resp_ended = true;
    resume_resp(s);
}

void stream_on_up_close(struct stream *s, uint32_t error_code)
{
    s->up_closed = true; /* nothing to reset: it is closed */
    if (s->resp_ended) {
        detach_up(s, false);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "upstream reset the stream: %s", nghttp2_http2_strerror(error_code));
    enum grpc_status st = grpc_status_from_h2_error(error_code);
    /* REFUSED_STREAM (also what streams above a GOAWAY's last-stream-id get)
     * promises the application never saw the request. */
    if (maybe_retry(s, st, error_code == NGHTTP2_REFUSED_STREAM ? RETRY_TRANSPARENT : RETRY_STATUS, msg))
        return;
    detach_up(s, false);
    stream_fail(s, st, msg);
}

void stream_on_up_lost(struct stream *s, const char *why, bool unsent)
{
    s->up_closed = true; /* the connection is gone: nothing to reset */
    if (s->resp_ended) {
        detach_up(s, false);
        return;
    }
    if (maybe_retry(s, GRPC_UNAVAILABLE, unsent ? RETRY_TRANSPARENT : RETRY_STATUS, why))
        return;
    detach_up(s, false);
    stream_fail(s, GRPC_UNAVAILABLE, why);
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = container_of(t, struct stream, deadline_timer);
    stream_fail(s, GRPC_DEADLINE_EXCEEDED, "deadline exceeded at grelay");
}

size_t stream_pull_req(struct stream *s, uint8_t *out, size_t len, bool *eof)
{
    struct chunk_pool *pool = &stream_worker(s)->chunks;
    size_t n, acked_now = 0;
    if (s->replay) {
        /* Keep what is sent, for a retry; the client's window still opens
         * as bytes go upstream, so replay costs no backpressure. */
        n = buf_copy_at(&s->req, s->req_sent, out, len);
        s->req_sent += n;
        if (s->req_sent > s->req_acked) {
            acked_now = s->req_sent - s->req_acked;
            s->req_acked = s->req_sent;
        }
        if (s->req_sent > s->down->cfg->stream_buffer)
            drop_replay(s); /* too big to keep: this attempt is the last */
    } else {
        n = buf_read(&s->req, pool, out, len);
        if (n > s->req_acked) {
            acked_now = n - s->req_acked;
            s->req_acked = 0;
        } else {
            s->req_acked -= n;
        }
    }
    if (s->web && s->web->text) {
        /* The wire carried base64: once everything decoded so far has gone
         * upstream, the bytes that brought it are done with. */
        size_t queued = s->replay ? s->req.len - s->req_sent : s->req.len;
        acked_now = queued == 0 ? s->req_wire_unacked : 0;
        s->req_wire_unacked -= acked_now;
    }
    if (acked_now > 0) {
        s->down->ops->consume(s->down, s, acked_now);
        conn_want_flush(&s->down->io);
    }
    *eof = s->req.len == s->req_sent && s->req_ended;
    if (n == 0 && !*eof)
        s->req_deferred = true;
    return n;
}

nghttp2_nv *stream_req_trailers_nv(struct stream *s, size_t *n)
{
    if (s->req_trailers.n == 0) {
        *n = 0;
        return NULL;
    }
    return nv_from_list(s, &s->req_trailers, 0, n);
}

static void took_resp(struct stream *s, size_t n)
{
    if (n > 0 && s->up != NULL && !s->up_closed) {
        nghttp2_session_consume(s->up->h2, s->up_id, n);
        conn_want_flush(&s->up->io);
    }
}

/* gRPC-Web: the body, then the trailer frame; base64 in -text mode, each
 * pull padded on its own (clients decode quantum by quantum). */
static size_t pull_web(struct stream *s, uint8_t *out, size_t len, bool *eof)
{
    struct grpcweb *web = s->web;
    size_t n = 0;
    while (web->enc_off < web->enc_n && n < len)
        out[n++] = web->enc[web->enc_off++];
    size_t room = len - n;
    uint8_t raw[12288];
    size_t want = web->text ? (room >= 4 ? room / 4 * 3 : (room > 0 ? 3 : 0)) : room;
    if (web->text && want > sizeof(raw))
        want = sizeof(raw);
    uint8_t *dst = web->text ? raw : out + n;
    size_t got = buf_read(&s->resp, &stream_worker(s)->chunks, dst, want);
    took_resp(s, got);
    if (got < want && s->resp.len == 0 && s->resp_ended) {
        if (!web->trailer_built && grpcweb_build_trailer(web, &s->arena, &s->resp_trailers) != GR_OK) {
            web->trailer_built = true; /* out of memory: end without the frame */
            web->trailer_len = web->trailer_off = 0;
        }
        size_t t = web->trailer_len - web->trailer_off;
        if (t > want - got)
            t = want - got;
        memcpy(dst + got, web->trailer + web->trailer_off, t);
        web->trailer_off += t;
        got += t;
    }
    if (web->text && got > 0) {
        if (room >= 4) {
            n += grpcweb_base64(raw, got, out + n);
        } else {
            web->enc_n = (uint8_t)grpcweb_base64(raw, got, web->enc);
            web->enc_off = 0;
            while (web->enc_off < web->enc_n && n < len)
                out[n++] = web->enc[web->enc_off++];
        }
    } else if (!web->text) {
        n += got;
    }
    *eof = s->resp.len == 0 && s->resp_ended && web->trailer_built && web->trailer_off == web->trailer_len &&
           web->enc_off == web->enc_n;
    return n;
}

size_t stream_pull_resp(struct stream *s, uint8_t *out, size_t len, bool *eof)
{
    size_t n;
    if (s->web != NULL) {
        n = pull_web(s, out, len, eof);
    } else {
        n = buf_read(&s->resp, &stream_worker(s)->chunks, out, len);
        took_resp(s, n);
        *eof = s->resp.len == 0 && s->resp_ended;
    }
    if (n == 0 && !*eof)
        s->resp_deferred = true;
    return n;
}

bool stream_has_trailers(const struct stream *s) { return s->web == NULL && s->resp_trailers.n > 0; }

/* Response trailers as name/value pairs for nghttp2 (arena memory). */
nghttp2_nv *stream_trailers_nv(struct stream *s, size_t *n)
{
    if (!stream_has_trailers(s)) {
        *n = 0;
        return NULL;
    }
    return nv_from_list(s, &s->resp_trailers, 0, n);
}
