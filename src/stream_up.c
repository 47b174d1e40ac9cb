/* The upstream side of a call: the events of its attempt's upstream
 * stream (upstream_events, through s->up), apart from stream.c so both stay
 * readable. The state machine itself (its transitions, attempts, flow of
 * bytes) is stream.c's, through grelay/stream_int.h. */
#include "grelay/stream.h"
#include "grelay/stream_int.h"
#include "grelay/downstream.h"
#include "grelay/log.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <string.h>

/* What one attempt's response headers and trailers together may hold:
 * bytes (32 + name + value a field, as RFC 9113 counts them) and fields
 * (pseudo-headers included). Past either the call fails RESOURCE_EXHAUSTED
 * and the upstream stream is reset. 1,000 fields: trailers of gRPC
 * backends that return one entry per error detail or debug key reach a few
 * hundred (nghttpx's max-response-header-fields is 500); the bytes bound
 * the memory whatever the count. See docs/limits.md, Header blocks. */
#define MAX_RESPONSE_HEADERS (256 * 1024)
#define MAX_RESPONSE_FIELDS 1000
/* Informational (1xx) responses an attempt may get before its final one
 * (their fields are counted, not kept); one more fails the call. */
#define MAX_RESPONSE_1XX 5
/* How long response headers are held, waiting for the first DATA or the
 * trailers, on a route with a retry_policy but no per_try_timeout (with
 * one, its rest bounds the hold): a stream that sends its headers early
 * and its messages late gets them this much later at most. */
#define HOLD_MAX_S 1.0

/* ---- Upstream events (upstream_events, through s->up). ---- */

static void ev_granted(struct up_slot *sl) { stream_submit_attempt(stream_of(sl), true); }

static void ev_refused(struct up_slot *sl, const char *why) { (void)stream_fail(stream_of(sl), GRPC_UNAVAILABLE, why); }

static inline bool informational(const struct stream *s) { return s->resp_status >= 100 && s->resp_status < 200; }

/* The call fails and the upstream stream is reset (by the detach, before
 * nghttp2 would reset it with INTERNAL_ERROR): no retry, a backend that
 * sends this much will send it again. */
static int resp_over_limit(struct stream *s, bool bytes)
{
    char msg[160];
    if (bytes)
        snprintf(msg, sizeof(msg),
                 "upstream response headers exceed grelay's limit of %u bytes (32 + name + value a field)",
                 (unsigned)MAX_RESPONSE_HEADERS);
    else
        snprintf(msg, sizeof(msg), "upstream response headers exceed grelay's limit of %u fields",
                 (unsigned)MAX_RESPONSE_FIELDS);
    (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, msg);
    return GR_ERR_LIMIT;
}

static int ev_header(struct up_slot *sl, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    struct stream *s = stream_of(sl);
    uint64_t bytes = (uint64_t)s->resp_header_bytes + HEADERS_FIELD_OVERHEAD + namelen + valuelen;
    if (bytes > MAX_RESPONSE_HEADERS || s->resp_header_fields >= MAX_RESPONSE_FIELDS)
        return resp_over_limit(s, bytes > MAX_RESPONSE_HEADERS);
    s->resp_header_bytes = (uint32_t)bytes;
    s->resp_header_fields++;
    bool trailers = s->resp_state != RESP_WAITING || s->resp_held;
    if (!trailers && namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->resp_status = grpc_status_value(value, valuelen);
        return GR_OK;
    }
    /* Pseudo headers come first (nghttp2 checks), so a 1xx block is known
     * as one before its fields, which are not kept. */
    if (name[0] == ':' || informational(s) || headers_hop_by_hop(name, namelen, value, valuelen))
        return GR_OK;
    return headers_add(trailers ? &s->resp_trailers : &s->resp_hdrs, stream_att_arena(s), name, namelen, value,
                       valuelen);
}

static void ev_end(struct up_slot *sl);

/* Sends the upstream's response headers to the client: the call commits to
 * this attempt (no retry after this). Returns false when the call was
 * failed (or reset) instead. */
static bool send_resp_headers(struct stream *s, bool end_stream)
{
    char text[4];
    grpc_http_status_text(s->resp_status, text);
    int rc = stream_respond(s, text, &s->resp_hdrs, false, end_stream);
    if (rc == GR_ERR_NOMEM) {
        (void)stream_fail(s, GRPC_INTERNAL, "grelay is out of memory");
        return false;
    }
    if (rc != GR_OK) {
        log_debug("stream %d: cannot send the response headers", s->id);
        return stream_abort(s);
    }
    stream_set_resp(s, end_stream ? RESP_ENDED : RESP_BODY);
    flow_drop_replay(&s->req, &stream_worker(s)->chunks); /* committed: the client has the headers */
    /* The per-try timeout bounds the wait for an answer; once one streams
     * back no retry is possible, and the call's deadline governs the rest. */
    ev_timer_stop(stream_worker(s)->loop, &s->attempt_timer);
    conn_want_flush(&s->down->io);
    return true;
}

/* ---- Held response headers (a late status may still be retried). ---- */

/* Whether headers without END_STREAM are held: the route has a
 * retry_policy with a retry left, and the request can be replayed. */
static bool hold_worthwhile(const struct stream *s)
{
    const struct gr_retry_cfg *rp = &s->route->retry;
    return s->req.replay && rp->retry_on_mask != 0 && s->retries < rp->num_retries && !stream_worker(s)->stopping;
}

void stream_hold_drop(struct stream *s)
{
    if (!s->resp_held)
        return;
    s->resp_held = false;
    ev_timer_stop(stream_worker(s)->loop, &s->hold_timer);
}

/* The held headers go to the client (DATA came, the trailers carry no
 * status to retry, or the hold's time is up). Same return as
 * send_resp_headers. */
static bool hold_release(struct stream *s)
{
    stream_hold_drop(s);
    return send_resp_headers(s, false);
}

static void on_hold_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = container_of(t, struct stream, hold_timer);
    log_debug("stream %d: no DATA nor trailers within the hold: the response headers go out", s->id);
    (void)hold_release(s);
}

/* Holds the response headers until the first DATA, the trailers, or the
 * rest of the per-try timeout (HOLD_MAX_S without one), whichever first. */
static void hold_start(struct stream *s)
{
    struct ev_loop *loop = stream_worker(s)->loop;
    ev_tstamp left = HOLD_MAX_S;
    if (ev_is_active(&s->attempt_timer)) { /* the per-try timeout now bounds the hold alone */
        left = ev_timer_remaining(loop, &s->attempt_timer);
        ev_timer_stop(loop, &s->attempt_timer);
    }
    s->resp_held = true;
    ev_timer_init(&s->hold_timer, on_hold_timer, left > 0 ? left : 0.001, 0.0);
    ev_timer_start(loop, &s->hold_timer);
}

/* The trailers of an attempt whose headers are held: nothing reached the
 * client, so a status in retry_on is retried as a trailers-only one is;
 * any other answer goes out as it came, headers then trailers. */
/* The upstream's grpc-status gs (not NULL) says the attempt failed before
 * anything reached the client: retried if the route's retry_on says so.
 * Returns true if a retry began. */
static bool retry_on_status(struct stream *s, const struct gr_hdr *gs, const char *when)
{
    char msg[200];
    int code = grpc_status_value(gs->value, gs->valuelen);
    snprintf(msg, sizeof(msg), "upstream answered %s%s", grpc_status_name((enum grpc_status)code), when);
    return code > 0 && code <= GRPC_UNAUTHENTICATED && stream_maybe_retry(s, (enum grpc_status)code, RETRY_STATUS, msg);
}

static void on_held_trailers(struct stream *s)
{
    const struct gr_hdr *gs = headers_find(&s->resp_trailers, "grpc-status");
    if (gs != NULL && retry_on_status(s, gs, " after its response headers"))
        return;
    if (hold_release(s))
        ev_end(&s->up);
}

/* The final response HEADERS from upstream. */
static void on_resp_headers(struct stream *s, bool end_stream)
{
    const struct gr_hdr *gs = headers_find(&s->resp_hdrs, "grpc-status");
    char msg[200];
    enum grpc_status st;
    /* Trailers-only failure: the status is known before anything went to
     * the client, so the route's retry_on may apply. */
    if (gs != NULL && end_stream && s->req.replay && retry_on_status(s, gs, ""))
        return;
    if (gs == NULL &&
        !grpc_response_ok(s->resp_status, headers_find(&s->resp_hdrs, "content-type"), &st, msg, sizeof(msg))) {
        stream_retry_or_fail(s, RETRY_STATUS, st, msg); /* an error page from something that is not gRPC */
        return;
    }
    if (!end_stream && gs == NULL && hold_worthwhile(s))
        hold_start(s);
    else
        (void)send_resp_headers(s, end_stream);
}

static void ev_end(struct up_slot *sl)
{
    struct stream *s = stream_of(sl);
    if (s->resp_held)
        (void)hold_release(s); /* END_STREAM on DATA (an empty one): headers, then the end */
    if (s->resp_state == RESP_WAITING) {
        /* END_STREAM with no final HEADERS cannot pass nghttp2; be safe. */
        (void)stream_fail(s, GRPC_INTERNAL, "upstream ended the stream without a response");
        return;
    }
    if (s->resp_state == RESP_BODY) {
        stream_set_resp(s, RESP_ENDED);
        s->resp_end_due = true;
        stream_write_wait_update(s, false);
    }
    stream_resume_resp(s);
}

static void ev_headers_done(struct up_slot *sl, bool end_stream)
{
    struct stream *s = stream_of(sl);
    if (s->resp_held) {
        if (end_stream)
            on_held_trailers(s);
        return;
    }
    if (s->resp_state != RESP_WAITING) {
        if (end_stream)
            ev_end(sl); /* the trailers */
        return;
    }
    if (informational(s)) {
        /* Informational: nothing of it was kept; wait for the final answer,
         * but not for ever. */
        if (++s->resp_1xx > MAX_RESPONSE_1XX) {
            char msg[96];
            snprintf(msg, sizeof(msg), "upstream sent more than %d informational (1xx) responses", MAX_RESPONSE_1XX);
            (void)stream_fail(s, GRPC_INTERNAL, msg);
            return;
        }
        s->resp_status = 0;
        s->resp_header_bytes = s->resp_header_fields = 0;
        return;
    }
    on_resp_headers(s, end_stream);
}

static void ev_data(struct up_slot *sl, const uint8_t *data, size_t len)
{
    struct stream *s = stream_of(sl);
    if (s->resp_held)
        (void)hold_release(s); /* the first DATA: the headers go first */
    if (s->resp_state != RESP_BODY) {
        /* DATA before HEADERS is a protocol error nghttp2 already rejects;
         * after our own answer nobody wants it. */
        stream_credit_drop(s, &s->resp, len);
        return;
    }
    s->resp.received += len;
    if (flow_queue(&s->resp, &stream_worker(s)->chunks, data, len, len) != GR_OK) {
        stream_credit_back(s, &s->resp, len);
        (void)stream_fail(s, GRPC_RESOURCE_EXHAUSTED, "grelay is out of memory");
        return;
    }
    stream_count_held(s);
    stream_write_wait_update(s, false);
    stream_resume_resp(s);
}

static void ev_sent(struct up_slot *sl)
{
    struct stream *s = stream_of(sl);
    if (s->att == ATT_SUBMITTED)
        stream_set_att(s, ATT_SENT);
}

/* The attempt's upstream stream ended (closed, or its connection lost).
 * Returns true when the call was already answered in full (then nothing
 * more is to be done); otherwise the caller retries or fails it. */
static bool attempt_over(struct stream *s)
{
    stream_set_att(s, ATT_CLOSED); /* nothing to reset: it is closed */
    if (s->resp_state != RESP_ENDED)
        return false;
    stream_detach_up(s, false);
    stream_set_att(s, ATT_DONE);
    return true;
}

static void ev_closed(struct up_slot *sl, uint32_t h2_error)
{
    struct stream *s = stream_of(sl);
    if (attempt_over(s))
        return;
    char msg[160];
    snprintf(msg, sizeof(msg), "upstream reset the stream: %s", nghttp2_http2_strerror(h2_error));
    /* REFUSED_STREAM (also what streams above a GOAWAY's last-stream-id get)
     * promises the application never saw the request. */
    stream_retry_or_fail(s, h2_error == NGHTTP2_REFUSED_STREAM ? RETRY_TRANSPARENT : RETRY_STATUS,
                         grpc_status_from_h2_error(h2_error), msg);
}

static void ev_lost(struct up_slot *sl, const char *why, bool never_ready)
{
    struct stream *s = stream_of(sl);
    bool unsent = never_ready || s->att != ATT_SENT;
    if (!attempt_over(s))
        stream_retry_or_fail(s, unsent ? RETRY_TRANSPARENT : RETRY_STATUS, GRPC_UNAVAILABLE, why);
}

static size_t ev_pull(struct up_slot *sl, uint8_t *out, size_t len, bool *eof)
{
    return stream_pull_req(stream_of(sl), out, len, eof);
}

static size_t ev_peek(struct up_slot *sl, size_t len, bool *eof) { return stream_peek_req(stream_of(sl), len, eof); }

static int ev_move(struct up_slot *sl, struct buf *out, size_t n) { return stream_move_req(stream_of(sl), out, n); }

static nghttp2_nv *ev_trailers(struct up_slot *sl, size_t *n)
{
    struct stream *s = stream_of(sl);
    return stream_trailers_nv_of(s, &s->req_trailers, n);
}

const struct upstream_events stream_upstream_events = {
    .granted = ev_granted,
    .refused = ev_refused,
    .header = ev_header,
    .headers_done = ev_headers_done,
    .data = ev_data,
    .end = ev_end,
    .sent = ev_sent,
    .closed = ev_closed,
    .lost = ev_lost,
    .pull = ev_pull,
    .peek = ev_peek,
    .move = ev_move,
    .trailers = ev_trailers,
};
