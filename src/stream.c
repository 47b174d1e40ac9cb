/* One call, from request HEADERS to the last frame either way: its three
 * state halves, its attempts upstream, and the flow of its bytes (see
 * include/grelay/stream.h for the states and the flow-control invariant).
 * The request head is read and admitted by request.c; the events of the
 * upstream stream are stream_up.c's (grelay/stream_int.h joins them). */
#include "grelay/stream.h"
#include "grelay/affinity.h"
#include "grelay/breaker.h"
#include "grelay/stream_int.h"
#include "grelay/downstream.h"
#include "grelay/log.h"
#include "grelay/nv.h"
#include "grelay/pool.h"
#include "grelay/retry.h"
#include "grelay/stats.h"
#include "grelay/wcluster.h"
#include "grelay/worker.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first block of a call's attempt arena, carved from its arena: the
 * response headers and trailers of an attempt (measured, 2026-12-01: 128
 * bytes for the bench's held bidi calls, 240-256 for h2load's unary ones,
 * 340-720 for grpcio's). */
#define ATT_ARENA_FIRST 512
/* Blocks a call's arenas take from malloc once the inline one is full. */
#define STREAM_ARENA_BLOCK 1024
/* Streams a worker keeps for reuse (~2 MiB at most). */
#define MAX_FREE_STREAMS 1024

static void start_attempt(struct stream *s, bool retry);

/* ---- State transitions: the only writers of the three halves. ---- */

static void set_req(struct stream *s, enum stream_req to)
{
    assert(to == s->req_state + 1); /* HEADERS -> BODY -> ENDED */
    s->req_state = to;
}

void stream_set_resp(struct stream *s, enum stream_resp to)
{
    assert(to > s->resp_state); /* WAITING -> BODY -> ENDED, or WAITING -> ENDED */
    s->resp_state = to;
}

void stream_set_att(struct stream *s, enum stream_attempt to)
{
    /* legal[from] has a bit for each state it may move to */
#define B(x) (1u << (x))
    static const unsigned legal[] = {
        [ATT_IDLE] = B(ATT_QUEUED) | B(ATT_SUBMITTED) | B(ATT_DONE),
        [ATT_QUEUED] = B(ATT_SUBMITTED) | B(ATT_CLOSED) | B(ATT_IDLE) | B(ATT_BACKOFF) | B(ATT_DONE),
        [ATT_SUBMITTED] = B(ATT_SENT) | B(ATT_CLOSED) | B(ATT_QUEUED) | B(ATT_IDLE) | B(ATT_BACKOFF) | B(ATT_DONE),
        [ATT_SENT] = B(ATT_CLOSED) | B(ATT_IDLE) | B(ATT_BACKOFF) | B(ATT_DONE),
        [ATT_BACKOFF] = B(ATT_IDLE) | B(ATT_DONE),
        [ATT_CLOSED] = B(ATT_IDLE) | B(ATT_BACKOFF) | B(ATT_DONE),
        [ATT_DONE] = B(ATT_DONE),
    };
#undef B
    assert(legal[s->att] & (1u << to));
    (void)legal;
    s->att = to;
}

/* ---- The stream object. ---- */

void stream_cache_init(struct worker *w) { worker_cache_init(&w->streams, sizeof(struct stream), MAX_FREE_STREAMS); }

struct stream *stream_new(struct downstream *d, int32_t id)
{
    struct worker *w = d->io.w;
    struct stream *s = worker_cache_get(&w->streams);
    if (s != NULL)
        memset(s, 0, offsetof(struct stream, arena_first));
    else if ((s = calloc(1, sizeof(*s))) == NULL)
        return NULL;
    s->down = d;
    s->id = id;
    s->born = ev_now(w->loop);
    w->n_streams++;
    w->streams_begun++;
    if (gr_unlikely(!w->busy))
        worker_mark_busy(w);
    arena_init_with(&s->arena, STREAM_ARENA_BLOCK, s->arena_first, sizeof(s->arena_first));
    arena_init(&s->att_arena, STREAM_ARENA_BLOCK);
    headers_init(&s->req_hdrs);
    headers_init(&s->req_trailers);
    headers_init(&s->resp_hdrs);
    headers_init(&s->resp_trailers);
    flow_init(&s->req, true);
    flow_init(&s->resp, false);
    s->up.ev = &stream_upstream_events;
    gr_list_init(&s->up.link);
    gr_list_insert_tail(&d->streams, &s->down_link);
    ev_timer_init(&s->deadline_timer, NULL, 0.0, 0.0);
    ev_timer_init(&s->attempt_timer, NULL, 0.0, 0.0);
    ev_timer_init(&s->hold_timer, NULL, 0.0, 0.0);
    stream_obs_begin(s);
    return s;
}

nghttp2_nv *stream_nv(struct stream *s, const struct hdr_list *l, size_t extra, size_t *n)
{
    return nv_from_list(&s->arena, l, extra, n);
}

/* The name/value arrays of header blocks that are handed over at once
 * (request headers upstream, response headers to the client: nghttp2
 * copies the array as it takes it, HTTP/1.1 writes it out): built here, on
 * the worker's own thread, and let go after the call, so they take no room
 * in the call's arena for the rest of its life (issue 16: 10,000 held
 * calls). The strings they point to live in the call's arena. */
static __thread struct arena nv_scratch;
static __thread _Alignas(16) unsigned char nv_scratch_first[4096];

static struct arena *scratch(void)
{
    if (gr_unlikely(nv_scratch.first == NULL))
        arena_init_with(&nv_scratch, 4096, nv_scratch_first, sizeof(nv_scratch_first));
    return &nv_scratch;
}

int stream_respond(struct stream *s, const char *status, const struct hdr_list *l, bool add_ct, bool end_stream)
{
    struct nv_resp r = {.content_type = s->web ? s->web->content_type : "application/grpc",
                        .web = s->web != NULL,
                        .cors = s->cors,
                        .origin = &s->origin};
    size_t n;
    nghttp2_nv *nva = nv_response(scratch(), status, l, add_ct, &r, &n);
    int rc = nva == NULL ? GR_ERR_NOMEM : s->down->ops->respond(s->down, s, nva, n, end_stream);
    arena_free(&nv_scratch);
    return rc;
}

/* ---- Flow control: the one place bytes are given back. ---- */

/* n bytes of f were taken by the other side (or dropped): give them back
 * to their sender's window, as far as they are not given back already. */
void stream_credit_back(struct stream *s, struct flow *f, size_t n)
{
    n = flow_due(f, n);
    if (n == 0)
        return;
    f->given_back += n;
    if (f == &s->req) {
        s->down->ops->consume(s->down, s, n); /* the downstream flushes what it must */
    } else if (s->up.conn != NULL && s->att != ATT_CLOSED) {
        s->up.ops->consume(&s->up, n);
    }
}

/* Bytes arrived that nobody will take: counted and given back at once. */
void stream_credit_drop(struct stream *s, struct flow *f, size_t n)
{
    f->received += n;
    stream_credit_back(s, f, n);
}

void stream_resume_resp(struct stream *s)
{
    if (s->resp.parked && s->resp_state != RESP_WAITING) {
        s->resp.parked = false;
        s->down->ops->resume(s->down, s);
    }
    conn_want_flush(&s->down->io);
}

static void resume_req(struct stream *s)
{
    if (s->req.parked && s->up.conn != NULL && s->up.id > 0 && s->att != ATT_CLOSED) {
        s->req.parked = false;
        s->up.ops->resume(&s->up);
    }
}

/* ---- Ending the call. ---- */

/* Lets go of the upstream side: leaves the pool's line, or resets (when
 * reset is set and the upstream stream is still open) and detaches from the
 * upstream connection. Response bytes still queued owe no credit any more
 * (the stream's window goes with the stream; the connection's came back as
 * they arrived), and response headers held for it are dropped. Idempotent;
 * the attempt state is the caller's. */
void stream_detach_up(struct stream *s, bool reset)
{
    stream_hold_drop(s);
    if (s->up.conn != NULL) {
        s->resp.given_back = s->resp.received;
        s->up.ops->detach(&s->up, reset && s->att != ATT_CLOSED);
    }
    stream_obs_detach(s);
    pool_release(&s->up);
    if (s->resp_state == RESP_ENDED)
        stream_breaker_release(s); /* no attempt follows an answer: the breaker's place goes now */
}

/* ---- What a call holds, and clients that do not read. ---- */

/* Whether d's calls hold more than its connection_buffer: then response
 * credit is withheld (the backends wait) and no window grows. */
static bool over_budget(const struct downstream *d) { return d->held > d->cfg->connection_buffer; }

/* Gives the upstream stream back the credit of the response bytes the
 * client took, unless the connection is over its connection_buffer: then
 * the credit waits (held_went_down gives it back). */
static void give_back_resp(struct stream *s)
{
    uint64_t owed = flow_owed(&s->resp);
    if (owed > 0 && !over_budget(s->down))
        stream_credit_back(s, &s->resp, (size_t)owed);
}

/* d's held bytes went from before to d->held: when that crosses back under
 * connection_buffer, every call gets the credit withheld meanwhile. */
static void held_went_down(struct downstream *d, uint64_t before)
{
    if (before <= d->cfg->connection_buffer || over_budget(d))
        return;
    for (struct gr_list *it = d->streams.next; it != &d->streams; it = it->next)
        give_back_resp(container_of(it, struct stream, down_link));
}

/* The client took n response bytes: the upstream stream's window grows
 * toward the cluster's stream_buffer (flow_grow), as far as the windows of
 * the connection's calls, added up, stay within connection_buffer (and
 * the connection is not over it). */
static void grow_resp(struct stream *s, size_t n)
{
    struct downstream *d = s->down;
    if (s->up.conn == NULL || s->att == ATT_CLOSED || s->route == NULL)
        return;
    uint64_t budget = d->cfg->connection_buffer;
    uint64_t max = s->resp.window;
    if (!over_budget(d) && d->resp_windows < budget)
        max += budget - d->resp_windows;
    if (max > s->route->cluster->stream_buffer)
        max = s->route->cluster->stream_buffer;
    uint32_t old = s->resp.window;
    uint32_t w = flow_grow(&s->resp, n, (uint32_t)max);
    if (w > 0) {
        d->resp_windows += w - old;
        s->up.ops->grow(&s->up, w);
    }
}

/* Brings the connection's count of held bytes up to date with s: its
 * replay copy (request bytes whose credit went back to the client) and its
 * queued response. */
void stream_count_held(struct stream *s)
{
    struct downstream *d = s->down;
    uint64_t before = d->held;
    size_t now = s->req.acked + s->resp.q.len;
    d->held -= s->held;
    d->held += now;
    s->held = now;
    held_went_down(d, before);
}

/* Whether response bytes, or the body's end, wait for the client. */
static bool resp_waits(const struct stream *s) { return s->resp.q.len > 0 || s->resp_end_due; }

/* Starts, restarts (took: the client just took some) or stops the clock of
 * stream_write_timeout. The connection's CONN_TIMER_WRITE is set when
 * none is: a deadline set already is earlier, and its expiry looks again. */
void stream_write_wait_update(struct stream *s, bool took)
{
    struct downstream *d = s->down;
    if (!resp_waits(s) || d->cfg->stream_write_timeout_ms == 0) {
        s->write_wait = 0;
        return;
    }
    if (s->write_wait != 0 && !took)
        return;
    s->write_wait = ev_now(stream_worker(s)->loop);
    if (d->io.state != CONN_CLOSED && d->io.timer.at[CONN_TIMER_WRITE] == 0)
        conn_timer_set(&d->io.timer, CONN_TIMER_WRITE, (ev_tstamp)d->cfg->stream_write_timeout_ms / 1000.0);
}

static void finish_attempts(struct stream *s)
{
    ev_timer_stop(stream_worker(s)->loop, &s->attempt_timer);
    stream_detach_up(s, true);
    stream_breaker_release(s);
    if (s->att != ATT_DONE)
        stream_set_att(s, ATT_DONE);
}

/* The answer cannot be sent: the client gets RST_STREAM (an HTTP/1.1
 * connection closes). Never fails (see downstream_ops.reset). */
bool stream_abort(struct stream *s)
{
    s->code = s->code < 0 ? GRPC_INTERNAL : s->code; /* RST_STREAM(INTERNAL_ERROR): the client says INTERNAL */
    s->reset = true;
    finish_attempts(s);
    if (s->resp_state != RESP_ENDED)
        stream_set_resp(s, RESP_ENDED);
    s->resp_end_due = false; /* nothing waits for the client but the reset */
    s->write_wait = 0;
    s->down->ops->reset(s->down, s, NGHTTP2_INTERNAL_ERROR);
    return false;
}

bool stream_fail(struct stream *s, enum grpc_status status, const char *msg)
{
    finish_attempts(s);
    if (s->resp_state == RESP_ENDED)
        return true; /* the client already has (or is getting) a complete answer */
    s->code = (int8_t)status;
    log_debug("stream %d %.*s: %s (%s)", s->id, (int)s->path.valuelen, s->path.value ? (const char *)s->path.value : "",
              grpc_status_name(status), msg);
    if (grpc_status_trailers(&s->arena, &s->resp_trailers, status, msg) != GR_OK)
        return stream_abort(s);
    if (s->resp_state == RESP_BODY) {
        stream_set_resp(s, RESP_ENDED); /* trailers after the data */
        s->resp_end_due = true;
        stream_write_wait_update(s, false);
        stream_resume_resp(s);
        return true;
    }
    /* Trailers-only: one HEADERS frame with END_STREAM. */
    if (stream_respond(s, "200", &s->resp_trailers, true, true) != GR_OK)
        return stream_abort(s);
    stream_set_resp(s, RESP_ENDED);
    conn_want_flush(&s->down->io);
    return true;
}

bool stream_reply_http(struct stream *s, const char *status, const char *text, struct hdr_list *extra)
{
    struct hdr_list none;
    headers_init(&none);
    struct hdr_list *l = extra != NULL ? extra : &none;
    finish_attempts(s);
    s->http_status = (uint16_t)atoi(status);
    s->web = NULL; /* a plain HTTP answer: no gRPC-Web framing */
    bool body = text != NULL && text[0] != '\0' &&
                headers_add(l, &s->arena, NV_LIT("content-type"), NV_LIT("text/plain; charset=utf-8")) == GR_OK &&
                buf_append(&s->resp.q, &stream_worker(s)->chunks, (const uint8_t *)text, strlen(text)) == GR_OK;
    if (stream_respond(s, status, l, false, !body) != GR_OK)
        return stream_abort(s);
    stream_set_resp(s, RESP_ENDED);
    s->resp_end_due = body;
    stream_count_held(s);
    stream_write_wait_update(s, false);
    conn_want_flush(&s->down->io);
    return true;
}

/* The client does not take this call's response: the call ends here with
 * RST_STREAM(CANCEL) (an HTTP/1.1 connection closes), its upstream stream
 * is reset, and what it holds is freed now, even while the RST_STREAM
 * itself waits for a socket the client does not read. */
static void cut_unread(struct stream *s, const char *why)
{
    log_debug("stream %d %.*s: %s: reset", s->id, (int)s->path.valuelen,
              s->path.value ? (const char *)s->path.value : "", why);
    finish_attempts(s);
    s->code = GRPC_CANCELLED; /* RST_STREAM(CANCEL) */
    s->reset = true;
    struct chunk_pool *cp = &stream_worker(s)->chunks;
    buf_clear(&s->resp.q, cp);
    flow_drop_replay(&s->req, cp);
    s->resp_cut = true;
    s->resp_end_due = false;
    s->write_wait = 0;
    if (s->resp_state != RESP_ENDED)
        stream_set_resp(s, RESP_ENDED);
    stream_count_held(s);
    s->down->ops->reset(s->down, s, NGHTTP2_CANCEL);
}

void stream_write_timeouts(struct downstream *d, ev_tstamp now)
{
    ev_tstamp after = (ev_tstamp)d->cfg->stream_write_timeout_ms / 1000.0, next = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &d->streams) {
        struct stream *s = container_of(it, struct stream, down_link);
        if (s->write_wait == 0 || after == 0 || s->resp_cut)
            continue;
        if (s->write_wait + after <= now) {
            stats_limit_hit(stream_worker(s)->stats, d->cfg, LIMIT_STREAM_WRITE_TIMEOUT);
            cut_unread(s, "the client took none of the response for stream_write_timeout");
        } else if (next == 0 || s->write_wait + after < next)
            next = s->write_wait + after;
    }
    if (d->io.state == CONN_CLOSED)
        return;
    if (next != 0)
        conn_timer_set_at(&d->io.timer, CONN_TIMER_WRITE, next);
    else
        conn_timer_clear(&d->io.timer, CONN_TIMER_WRITE);
}

/* ---- Attempts. ---- */

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = container_of(t, struct stream, deadline_timer);
    if (s->resp_state == RESP_ENDED && resp_waits(s)) {
        /* The answer is complete but the client has not taken it by its own
         * deadline: it will not, and it must not hold its bytes forever. */
        cut_unread(s, "deadline passed with the answer not taken");
        return;
    }
    (void)stream_fail(s, GRPC_DEADLINE_EXCEEDED, "deadline exceeded at grelay");
}

/* The arena of the current attempt: what it allocates goes back at the
 * next retry, so retries reuse one attempt's memory instead of adding
 * theirs. Its first block comes from the call's arena, once. */
struct arena *stream_att_arena(struct stream *s)
{
    struct arena *a = &s->att_arena;
    if (a->first == NULL && a->head == NULL) {
        void *first = arena_alloc(&s->arena, ATT_ARENA_FIRST);
        if (first != NULL)
            arena_init_with(a, STREAM_ARENA_BLOCK, first, ATT_ARENA_FIRST);
    }
    return a;
}

/* Forgets the failed attempt's response so the next one starts clean,
 * and gives back the memory of its headers (and of its request nv). */
static void reset_for_attempt(struct stream *s)
{
    s->up.id = 0;
    flow_rewind(&s->req);
    s->resp_status = 0;
    s->resp_1xx = 0;
    s->resp_header_bytes = s->resp_header_fields = 0;
    headers_init(&s->resp_hdrs);
    headers_init(&s->resp_trailers);
    arena_free(&s->att_arena); /* its first block stays, for the next attempt */
    buf_clear(&s->resp.q, &stream_worker(s)->chunks);
}

/* After a failed attempt: starts another if the request is replayable,
 * nothing reached the client, the kind of failure allows it, and the
 * deadline leaves room. Returns true if so. */
bool stream_maybe_retry(struct stream *s, enum grpc_status st, enum retry_kind kind, const char *why)
{
    struct worker *w = stream_worker(s);
    if (!s->req.replay || s->resp_state != RESP_WAITING || s->route == NULL || w->stopping)
        return false;
    struct retry_state rs = {.configured = s->retries, .transparent = s->transparent_retries};
    uint64_t delay_us;
    if (!retry_decide(&s->route->retry, &rs, kind, st, wcluster_size(worker_cluster(w, s->route->cluster)),
                      s->deadline_us, gr_now_us(), &w->rng, &delay_us))
        return false;
    enum breaker_limit lim = rs.configured > s->retries ? stream_breaker_take_retry(s) : BREAKER_OK;
    if (lim != BREAKER_OK) /* the call ends as this attempt did, its message saying why */
        return stream_breaker_retry_refused(s, st, kind == RETRY_STATUS, why, lim);
    stream_obs_retry(s, (int)st, rs.transparent > s->transparent_retries);
    s->retries = rs.configured;
    s->transparent_retries = rs.transparent;
    log_debug("stream %d: %s; retrying (%s, %llu us backoff)", s->id, why,
              kind == RETRY_TRANSPARENT ? "transparent" : "retry_policy", (unsigned long long)delay_us);
    ev_timer_stop(w->loop, &s->attempt_timer);
    stream_detach_up(s, true);
    reset_for_attempt(s);
    stream_count_held(s);
    if (delay_us == 0) {
        stream_set_att(s, ATT_IDLE);
        start_attempt(s, true);
    } else {
        stream_set_att(s, ATT_BACKOFF);
        ev_timer_set(&s->attempt_timer, (double)delay_us / 1e6, 0.0);
        ev_timer_start(w->loop, &s->attempt_timer);
    }
    return true;
}

void stream_retry_or_fail(struct stream *s, enum retry_kind kind, enum grpc_status st, const char *msg)
{
    if (!stream_maybe_retry(s, st, kind, msg))
        (void)stream_fail(s, st, msg);
}

static void on_attempt_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = container_of(t, struct stream, attempt_timer);
    if (s->att == ATT_BACKOFF) {
        stream_set_att(s, ATT_IDLE);
        start_attempt(s, true);
        return;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "per-try timeout of %llums exceeded at grelay",
             (unsigned long long)s->route->retry.per_try_timeout_ms);
    stream_retry_or_fail(s, RETRY_PER_TRY, GRPC_DEADLINE_EXCEEDED, msg);
}

/* The request headers for the upstream, with the time actually left as
 * grpc-timeout as the headers leave, minus the route's offset (for the way
 * back), but never less than 1ms of what is left. The per-try timeout is
 * grelay's to enforce (as in Envoy): sending it would let the backend race
 * us with its own DEADLINE_EXCEEDED. */
static nghttp2_nv *upstream_nv(struct stream *s, size_t *n)
{
    struct nv_req r = {.method = &s->method,
                       .authority = &s->authority,
                       .fallback = pool_address(s->up.pool),
                       .path = &s->path,
                       .https = s->route->cluster->tls.set};
    if (s->deadline_us) {
        uint64_t now = gr_now_us();
        uint64_t left = s->deadline_us > now ? s->deadline_us - now : 0;
        uint64_t offset = s->route->grpc_timeout_offset_ms * 1000;
        uint64_t send = left > offset + 1000 ? left - offset : (left < 1000 ? left : 1000);
        r.timeout_us = send == 0 ? 1 : send;
    }
    return nv_request(scratch(), &s->req_hdrs, &r, n);
}

/* The attempt has a connection: send the request. from_line: it waited in
 * the pool's line (the failure then says so). */
void stream_submit_attempt(struct stream *s, bool from_line)
{
    size_t n;
    nghttp2_nv *nva = upstream_nv(s, &n);
    bool body = s->req_state != REQ_ENDED || s->req.q.len > 0 || s->req_trailers.n > 0;
    stream_set_att(s, ATT_SUBMITTED);
    s->down->resp_windows -= s->resp.window;
    s->resp.window = upstream_window_start(s->route->cluster->stream_buffer);
    s->down->resp_windows += s->resp.window;
    s->resp.taken = 0;
    int rc = nva != NULL ? s->up.ops->submit(&s->up, nva, n, body) : GR_ERR_NOMEM;
    arena_free(&nv_scratch); /* taken (or to be built again when the attempt is granted) */
    if (rc == GR_OK)
        return;
    if (rc == GR_ERR_AGAIN) { /* the connection waits for the backend's SETTINGS: granted follows */
        stream_set_att(s, ATT_QUEUED);
        return;
    }
    if (rc == GR_ERR_LIMIT) { /* nothing was sent: the backend would end the shared connection */
        (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED,
                          "request headers exceed the upstream's SETTINGS_MAX_HEADER_LIST_SIZE");
        return;
    }
    char msg[256];
    if (nva == NULL) {
        (void)stream_fail(s, from_line ? GRPC_INTERNAL : GRPC_UNAVAILABLE,
                          from_line ? "cannot send the request upstream" : "grelay is out of memory");
        return;
    }
    /* The connection takes no new stream (its ids are used up, or the
     * session ended): nothing reached the backend, so another connection
     * is tried transparently (it has drained itself). */
    snprintf(msg, sizeof(msg), "upstream %s of cluster %s: the connection takes no new stream",
             pool_address(s->up.pool), s->route->cluster->name);
    stream_retry_or_fail(s, RETRY_TRANSPARENT, GRPC_UNAVAILABLE, msg);
}

/* Sends the call to an endpoint (first attempt or retry). */
static void start_attempt(struct stream *s, bool retry)
{
    struct worker *w = stream_worker(s);
    if (!retry && !stream_breaker_admit(s))
        return;
    struct wcluster *wc = worker_cluster(w, s->route->cluster);
    if (wcluster_size(wc) == 0) {
        stats_add(stats_block(w->stats, s->route->cluster->stats), C_NO_ENDPOINT, 1);
        (void)stream_fail(s, GRPC_UNAVAILABLE, wcluster_why_empty(wc));
        return;
    }
    struct pool *p = wcluster_pick(wc, retry, s->last_ep,
                                   affinity_key(s->route->cluster, &s->req_hdrs, &s->authority, s->down), &s->last_ep);
    stream_obs_attempt(s, p->stats);
    uint64_t per_try = s->route->retry.per_try_timeout_ms;
    if (per_try > 0) {
        ev_timer_set(&s->attempt_timer, (double)per_try / 1e3, 0.0);
        ev_timer_start(w->loop, &s->attempt_timer);
    }
    char msg[256];
    int rc = pool_acquire(p, &s->up);
    if (rc == GR_OK) {
        if (s->up.queued)
            stream_set_att(s, ATT_QUEUED);
        else
            stream_submit_attempt(s, false);
        return;
    }
    if (rc == BREAKER_ERR_PENDING) {
        stream_breaker_refuse(s, p->cl, BREAKER_MAX_PENDING);
        return;
    }
    snprintf(msg, sizeof(msg), "upstream %s of cluster %s: %s", pool_address(p), s->route->cluster->name,
             rc == GR_ERR_LIMIT ? "too many calls waiting for a connection" : "cannot start a connection");
    (void)stream_fail(s, GRPC_UNAVAILABLE, msg);
}

/* Refuses s with REFUSED_STREAM when its connection's calls already hold
 * more than connection_buffer (the client may retry it elsewhere, later):
 * a client that does not read gets no more work done for it. Returns true
 * if so. HTTP/1.1 carries one call at a time: nothing to refuse. */
static bool refuse_over_budget(struct stream *s)
{
    struct downstream *d = s->down;
    if (d->http1 || d->held <= d->cfg->connection_buffer)
        return false;
    stats_limit_hit(stream_worker(s)->stats, d->cfg, LIMIT_CONNECTION_BUFFER);
    log_debug("stream %d: its connection holds %llu bytes, over connection_buffer: refused", s->id,
              (unsigned long long)d->held);
    finish_attempts(s);
    stream_set_resp(s, RESP_ENDED);
    s->code = GRPC_UNAVAILABLE; /* REFUSED_STREAM: the client may retry it */
    s->reset = true;
    d->ops->reset(d, s, NGHTTP2_REFUSED_STREAM);
    return true;
}

void stream_start(struct stream *s)
{
    ev_timer_init(&s->attempt_timer, on_attempt_timer, 0.0, 0.0);
    stream_obs_routed(s);
    if (refuse_over_budget(s))
        return;
    if (s->deadline_us) {
        uint64_t now = gr_now_us();
        double left = s->deadline_us > now ? (double)(s->deadline_us - now) / 1e6 : 0.0;
        ev_timer_init(&s->deadline_timer, on_deadline, left, 0.0);
        ev_timer_start(stream_worker(s)->loop, &s->deadline_timer);
    }
    start_attempt(s, false);
}

/* ---- Request body, from the client. ---- */

void stream_give_back_req(struct stream *s, size_t n) { stream_credit_back(s, &s->req, n); }

void stream_req_queued(struct stream *s)
{
    if (s->att != ATT_DONE)
        resume_req(s);
}

void stream_headers_read(struct stream *s) { set_req(s, REQ_BODY); }

void stream_on_req_end(struct stream *s)
{
    set_req(s, REQ_ENDED);
    stream_req_queued(s);
}

/* ---- The end of the downstream stream. ---- */

void stream_on_down_close(struct stream *s, uint32_t error_code)
{
    struct worker *w = stream_worker(s);
    if (s->att != ATT_DONE && error_code != NGHTTP2_NO_ERROR)
        log_debug("stream %d: client closed it (%s), cancelling upstream", s->id, nghttp2_http2_strerror(error_code));
    ev_timer_stop(w->loop, &s->deadline_timer);
    finish_attempts(s);
    stream_obs_end(s);
    /* Request bytes never given back still hold the client's window. */
    uint64_t unacked = flow_unacked(&s->req);
    if (unacked > 0)
        s->down->ops->consume(s->down, NULL, (size_t)unacked);
    buf_clear(&s->req.q, &w->chunks);
    buf_clear(&s->resp.q, &w->chunks);
    uint64_t before = s->down->held;
    s->down->held -= s->held;
    s->down->resp_windows -= s->resp.window;
    gr_list_remove(&s->down_link);
    held_went_down(s->down, before);
    arena_free(&s->att_arena);
    arena_free(&s->arena);
    w->n_streams--;
    worker_snap_drop(w, s->snap); /* the route's snapshot may go (at the end of the iteration) */
    worker_cache_put(&w->streams, s);
}

void stream_close_all(struct downstream *d)
{
    while (!gr_list_empty(&d->streams)) {
        struct stream *s = container_of(d->streams.next, struct stream, down_link);
        stream_on_down_close(s, NGHTTP2_CANCEL);
    }
}

size_t stream_cut_all(struct downstream *d, const char *msg)
{
    size_t n = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &d->streams) {
        struct stream *s = container_of(it, struct stream, down_link);
        if (s->resp_state == RESP_ENDED)
            continue; /* its answer is complete: it only waits for the client to read it */
        (void)stream_fail(s, GRPC_UNAVAILABLE, msg);
        n++;
    }
    return n;
}

/* ---- Bodies pulled by the sides. ---- */

/* Whether a failed attempt could still be tried again, by retry.c's rules
 * (transparently, or under the route's retry_policy), as far as is known
 * before the failure: only then are the request bytes sent worth keeping. */
static bool retry_possible(const struct stream *s)
{
    if (s->resp_state != RESP_WAITING || s->route == NULL || stream_worker(s)->stopping)
        return false;
    if (s->retries < s->route->retry.num_retries)
        return true;
    size_t n = wcluster_size(worker_cluster(stream_worker(s), s->route->cluster));
    return s->transparent_retries < (n > 2 ? n : 2);
}

/* How many request bytes s may keep for a replay: none once no retry can
 * use them; else up to the listener's stream_buffer, and no more than its
 * connection may still hold under connection_buffer (past it the call
 * commits to this attempt, as gRPC's own retry buffer does). */
static size_t replay_room(const struct stream *s)
{
    if (!s->req.replay || !retry_possible(s))
        return 0;
    const struct gr_listener_cfg *l = s->down->cfg;
    uint64_t held = s->down->held;
    uint64_t room = s->req.acked + (l->connection_buffer > held ? l->connection_buffer - held : 0);
    return room < l->stream_buffer ? (size_t)room : l->stream_buffer;
}

/* After a pull of n request bytes (due: their credit for the client):
 * the credit, what the call holds; returns whether the body is complete. */
static bool req_pulled(struct stream *s, size_t n, size_t due)
{
    stream_credit_back(s, &s->req, due);
    stream_count_held(s);
    bool eof = flow_drained(&s->req) && s->req_state == REQ_ENDED;
    if (n == 0 && !eof)
        s->req.parked = true;
    return eof;
}

/* The upstream provider pulls the request body. */
size_t stream_pull_req(struct stream *s, uint8_t *out, size_t len, bool *eof)
{
    size_t due;
    size_t n = flow_pull(&s->req, &stream_worker(s)->chunks, out, len, replay_room(s), &due);
    *eof = req_pulled(s, n, due);
    return n;
}

size_t stream_peek_req(const struct stream *s, size_t len, bool *eof)
{
    size_t ready = flow_ready(&s->req), n = ready < len ? ready : len;
    *eof = n == ready && s->req_state == REQ_ENDED;
    return n;
}

int stream_move_req(struct stream *s, struct buf *out, size_t n)
{
    size_t due;
    long got = flow_pull_buf(&s->req, &stream_worker(s)->chunks, out, n, replay_room(s), &due);
    if (got < 0)
        return GR_ERR_NOMEM;
    (void)req_pulled(s, (size_t)got, due);
    return GR_OK;
}

/* After taken bytes of the response left its queue (eof: the body is
 * complete): what the call holds, the windows, the write clock. */
static void resp_pulled(struct stream *s, size_t taken, bool eof)
{
    if (eof)
        s->resp_end_due = false;
    stream_count_held(s);
    give_back_resp(s);
    if (taken > 0)
        grow_resp(s, taken);
    stream_write_wait_update(s, taken > 0 || eof);
}

size_t stream_pull_resp(struct stream *s, uint8_t *out, size_t len, bool *eof)
{
    size_t n, taken;
    struct chunk_pool *cp = &stream_worker(s)->chunks;
    bool ended = s->resp_state == RESP_ENDED;
    if (s->resp_cut) { /* reset: the RST_STREAM is on its way */
        *eof = false;
        s->resp.parked = true;
        return 0;
    }
    if (s->web != NULL) {
        n = grpcweb_pull(s->web, &s->resp.q, cp, ended, &s->resp_trailers, &s->arena, out, len, &taken, eof);
    } else {
        n = taken = buf_read(&s->resp.q, cp, out, len);
        *eof = s->resp.q.len == 0 && ended;
    }
    resp_pulled(s, taken, *eof);
    if (n == 0 && !*eof)
        s->resp.parked = true;
    return n;
}

size_t stream_peek_resp(const struct stream *s, size_t len, bool *eof)
{
    if (s->resp_cut || s->web != NULL || s->resp.q.len == 0)
        return 0;
    size_t n = s->resp.q.len < len ? s->resp.q.len : len;
    *eof = n == s->resp.q.len && s->resp_state == RESP_ENDED;
    return n;
}

int stream_move_resp(struct stream *s, struct buf *out, size_t n)
{
    if (buf_move(out, &s->resp.q, &stream_worker(s)->chunks, n) != GR_OK)
        return GR_ERR_NOMEM;
    resp_pulled(s, n, s->resp.q.len == 0 && s->resp_state == RESP_ENDED);
    return GR_OK;
}

/* l as nghttp2 trailers, with the contract of h2_common_data_result. */
nghttp2_nv *stream_trailers_nv_of(struct stream *s, const struct hdr_list *l, size_t *n)
{
    *n = 0;
    if (l->n == 0)
        return NULL;
    nghttp2_nv *nva = stream_nv(s, l, 0, n);
    if (nva == NULL)
        *n = l->n; /* due, but out of memory */
    return nva;
}

nghttp2_nv *stream_trailers_nv(struct stream *s, size_t *n)
{
    if (s->web != NULL) { /* gRPC-Web carries them in the body */
        *n = 0;
        return NULL;
    }
    return stream_trailers_nv_of(s, &s->resp_trailers, n);
}
