/* What metrics (stats.h) and the access log say of a call: its part of
 * the stream module (stream.h declares these), apart from stream.c so the
 * state machine stays readable. Everything here runs on the call's worker
 * and writes only that worker's shard. */
#include "grelay/access_log.h"
#include "grelay/affinity.h"
#include "grelay/downstream.h"
#include "grelay/grpc.h"
#include "grelay/headers.h"
#include "grelay/outlier.h"
#include "grelay/pool.h"
#include "grelay/pool_eject.h"
#include "grelay/stats.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <time.h>

static inline struct worker *obs_worker(const struct stream *s) { return s->down->io.w; }

void stream_obs_begin(struct stream *s)
{
    s->t0_us = gr_now_us();
    s->code = -1;
    struct worker *w = obs_worker(s);
    stats_add(stats_block(w->stats, s->down->cfg->stats), L_IN_FLIGHT, 1);
}

void stream_obs_routed(struct stream *s)
{
    struct worker *w = obs_worker(s);
    if (s->route == NULL || s->route_counted)
        return;
    s->route_counted = true;
    stats_add(stats_block(w->stats, s->route->stats), R_IN_FLIGHT, 1);
    if (s->web != NULL)
        stats_add(stats_block(w->stats, s->down->cfg->stats), s->web->text ? L_GRPC_WEB_TEXT : L_GRPC_WEB, 1);
}

/* The attempt in flight (if any) ended with code. */
static void attempt_over(struct stream *s, int code)
{
    if (s->att_ep == NULL || !s->att_live)
        return;
    s->att_live = false;
    uint64_t *b = stats_block(obs_worker(s)->stats, s->att_ep);
    stats_add(b, E_IN_FLIGHT, (uint64_t)-1);
    stats_add(b, (unsigned)(E_CODES + (code >= 0 && code < STATS_CODES ? code : GRPC_UNKNOWN)), 1);
}

/* What the attempt's end says of its endpoint (outlier.h): the backend's
 * grpc-status, whether it came trailers-only or in trailers after data
 * (the response's own trailers: grelay writes its local ones only after
 * the attempt is let go), or the status gRPC gives a non-gRPC HTTP answer
 * (an error page, or a 200 that is not gRPC);
 * OUTLIER_RESET when the upstream stream closed with none of them (a
 * reset, a lost connection, an end without trailers); OUTLIER_NOTHING when
 * grelay ended the attempt itself (the client cancelled, the deadline or
 * the per-try timeout passed, a local limit). */
static int attempt_outcome(const struct stream *s)
{
    /* Trailers are only ever this attempt's (headers held for a late
     * status included: resp_state is still RESP_WAITING then). */
    const struct gr_hdr *gs = headers_find(&s->resp_trailers, "grpc-status");
    if (gs == NULL)
        gs = headers_find(&s->resp_hdrs, "grpc-status");
    if (gs != NULL) {
        int code = grpc_status_value(gs->value, gs->valuelen);
        return code >= 0 && code < STATS_CODES ? code : GRPC_UNKNOWN;
    }
    enum grpc_status st;
    char msg[8];
    if (s->resp_status >= 200 &&
        !grpc_response_ok(s->resp_status, headers_find(&s->resp_hdrs, "content-type"), &st, msg, sizeof(msg)))
        return (int)st;
    return s->att == ATT_CLOSED ? OUTLIER_RESET : OUTLIER_NOTHING;
}

void stream_obs_detach(struct stream *s)
{
    /* Only with outlier_detection, and once HEADERS went out (the backend had the call). */
    if (s->up.pool != NULL && s->up.pool->cl->outlier.set && s->up.id > 0)
        pool_attempt_result(s->up.pool, attempt_outcome(s));
}

void stream_obs_attempt(struct stream *s, const struct stats_key *ep)
{
    attempt_over(s, GRPC_UNAVAILABLE); /* not expected: each retry ends the attempt before */
    s->att_ep = ep;
    s->att_live = true;
    s->attempts++;
    stats_add(stats_block(obs_worker(s)->stats, ep), E_IN_FLIGHT, 1);
}

void stream_obs_retry(struct stream *s, int code, bool transparent)
{
    attempt_over(s, code);
    if (s->route != NULL)
        stats_add(stats_block(obs_worker(s)->stats, s->route->stats), transparent ? R_RETRY_TRANS : R_RETRY_CONF, 1);
}

/* The status the client got: grelay's own answer, else the upstream's
 * grpc-status (trailers, or a trailers-only answer), else CANCELLED (the
 * client went away before the answer was complete). */
static int final_code(const struct stream *s)
{
    if (s->code >= 0)
        return s->code;
    if (s->resp_state != RESP_ENDED || s->resp_end_due)
        return GRPC_CANCELLED;
    const struct gr_hdr *gs = headers_find(&s->resp_trailers, "grpc-status");
    if (gs == NULL)
        gs = headers_find(&s->resp_hdrs, "grpc-status");
    if (gs == NULL)
        return GRPC_UNKNOWN;
    int code = grpc_status_value(gs->value, gs->valuelen);
    return code >= 0 && code < STATS_CODES ? code : GRPC_UNKNOWN;
}

static struct access_str hdr_str(const struct gr_hdr *h)
{
    return h != NULL && h->value != NULL ? (struct access_str){(const char *)h->value, h->valuelen}
                                         : (struct access_str){NULL, 0};
}

static const char *protocol_of(const struct stream *s)
{
    if (s->web != NULL)
        return s->web->text ? "grpc-web-text" : "grpc-web";
    return s->down->http1 ? "http1" : "h2";
}

/* The access log line of a call that ended with code (-1: a plain HTTP
 * answer) after duration_us. */
static void log_call(struct stream *s, int code, uint64_t duration_us)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t end_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    const struct gr_hdr *msg = headers_find(&s->resp_trailers, "grpc-message");
    if (msg == NULL)
        msg = headers_find(&s->resp_hdrs, "grpc-message");
    struct access_record r = {
        .start_ms = end_ms - (int64_t)(duration_us / 1000),
        .duration_ms = (double)duration_us / 1000.0,
        .listener = s->down->cfg->name,
        .protocol = protocol_of(s),
        .authority = hdr_str(&s->authority),
        .path = hdr_str(&s->path),
        .grpc_code = code,
        .grpc_message = hdr_str(msg),
        .http_status = s->http_status != 0                         ? s->http_status
                       : s->reset || s->resp_state == RESP_WAITING ? 0
                                                                   : 200,
        .route = s->route != NULL ? s->route->name : "none",
        .cluster = s->route != NULL ? s->route->cluster->name : "none",
        .upstream = s->att_ep != NULL ? s->att_ep->labels[1] : NULL,
        .attempts = s->attempts,
        .request_bytes = s->req.received,
        .response_bytes = s->resp.received,
        .grpc_timeout = hdr_str(&s->grpc_timeout),
        .request_id = hdr_str(headers_find(&s->req_hdrs, "x-request-id")),
        .user_agent = hdr_str(headers_find(&s->req_hdrs, "user-agent")),
        .peer = affinity_peer(s->down),
    };
    access_log_write(obs_worker(s)->alog, &r);
}

void stream_obs_end(struct stream *s)
{
    struct worker *w = obs_worker(s);
    const struct gr_listener_cfg *l = s->down->cfg;
    uint64_t *lb = stats_block(w->stats, l->stats);
    stats_add(lb, L_IN_FLIGHT, (uint64_t)-1);
    if (s->route_counted)
        stats_add(stats_block(w->stats, s->route->stats), R_IN_FLIGHT, (uint64_t)-1);
    uint64_t took = gr_now_us() - s->t0_us;
    if (s->http_status != 0) { /* a plain HTTP answer (preflight, not gRPC) carries no gRPC status */
        if (access_log_on())
            log_call(s, -1, took);
        return;
    }
    int code = final_code(s);
    attempt_over(s, code);
    const struct stats_key *route = s->route != NULL ? s->route->stats : stats_no_route_key(l);
    stats_call_done(w->stats, route, s->path.value, s->path.valuelen, code, took);
    if (access_log_on())
        log_call(s, code, took);
}
