/* Downstream HTTP/2: nghttp2 server sessions whose callbacks map onto
 * streams (stream user data = struct stream), and the worker's pass that
 * hibernates idle ones. How a connection ends (drain, GOAWAY, refusals,
 * holds) is in h2_goaway.c; both share struct dconn (h2_dconn.h). */
#include "grelay/h2_server.h"
#include "grelay/h2_dconn.h"
#include "grelay/downstream.h"
#include "grelay/h2_common.h"
#include "grelay/h2_hibernate.h"
#include "grelay/log.h"
#include "grelay/request.h"
#include "grelay/slab.h"
#include "grelay/stats.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long a connection that has opened no call may stay quiet before it
 * hibernates: a client that connects to call at once calls well within it
 * (so its session is not rebuilt), a burst of idle connections costs a
 * session each for no longer. */
#define H2_NAP_S 0.05

/* A call began or ended: the connection goes to the busy end of the
 * worker's hibernation list. */
static void dconn_busy(struct dconn *d)
{
    if (!gr_list_linked(&d->lru_link))
        return;
    struct worker *w = d->base.io.w;
    d->busy_at = ev_now(w->loop);
    gr_list_remove(&d->lru_link);
    gr_list_insert_tail(&w->h2s->lru, &d->lru_link);
}

/* ---- The connection's deadlines (c->timer, armed at accept):
 * IDLE: no call in flight for the listener's idle_timeout (cleared when a
 *   call begins, set again when the last one ends: never per frame); after
 *   a GOAWAY, how long the client has to take it.
 * HEADER: request_headers_timeout for the client's preface and SETTINGS
 *   (from accept), then for each request header block (from its first
 *   frame: a HEADERS frame whose payload, or CONTINUATIONs, trickle in).
 * KEEPALIVE: the client acknowledges our first SETTINGS within
 *   request_headers_timeout (nghttpx's settings_timer_).
 * WRITE: the earliest stream_write_timeout of the connection's calls. ---- */

static void call_began(struct dconn *d, int32_t stream_id)
{
    struct conn_timer *t = &d->base.io.timer;
    if (!d->goaway)
        conn_timer_clear(t, CONN_TIMER_IDLE);
    uint64_t rht = d->base.cfg->request_headers_timeout_ms;
    if (rht > 0) {
        d->hdr_wait = stream_id; /* header blocks do not interleave: one at a time */
        conn_timer_set(t, CONN_TIMER_HEADER, (ev_tstamp)rht / 1e3);
    }
}

static void headers_done(struct dconn *d, int32_t stream_id)
{
    if (d->hdr_wait != stream_id)
        return;
    d->hdr_wait = 0;
    conn_timer_clear(&d->base.io.timer, CONN_TIMER_HEADER);
}

/* A call ended: with none left, the idle clock starts. */
static void call_ended(struct dconn *d)
{
    uint64_t idle = d->base.cfg->idle_timeout_ms;
    if (idle > 0 && !d->goaway && gr_list_empty(&d->base.streams))
        conn_timer_set(&d->base.io.timer, CONN_TIMER_IDLE, (ev_tstamp)idle / 1e3);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dconn *d = user_data;
    d->block_id = 0;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST || d->sleep.reviving)
        return 0;
    if (gr_unlikely(worker_overloaded())) {
        /* Not processed at all: the client may retry it elsewhere (RFC 9113 8.7). */
        stats_limit_hit(d->base.io.w->stats, d->base.cfg, LIMIT_OVERLOAD);
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2_hibernate_on_request(&d->sleep, session);
    struct stream *s = stream_new(&d->base, frame->hd.stream_id);
    if (s == NULL) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    h2_check_req_init(&s->h2req);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    d->block_id = frame->hd.stream_id;
    d->block_stream = s;
    dconn_busy(d);
    call_began(d, frame->hd.stream_id);
    downstream_call_began(&d->base);
    return 0;
}

/* A provoked reset is charged when it is decided, not when it is sent, so
 * that a read full of them ends the connection within that read (d_on_read
 * feeds nghttp2 in slices); a call of this read that has not started never
 * does. */
static void charge_reset(struct dconn *d, struct stream *s)
{
    if (s != NULL)
        s->start_due = false;
    d->rst_ahead++;
    h2_goaway_spend_reset(d, "too many streams reset because of the client");
}

/* A malformed request (h2_check.h): the stream is reset with
 * PROTOCOL_ERROR, as nghttp2's HTTP messaging resets it; nothing more of it
 * reaches the call, and a call of this read does not start. A fault in a
 * header block (charge) is charged now, as nghttp2 charged it (through
 * on_invalid_frame_recv); one in DATA when its reset is sent (on_frame_send),
 * as nghttp2's were: a stream nghttp2 already resets for another reason
 * gets no second reset, and so no charge without one. */
static void malformed(struct dconn *d, struct stream *s, int32_t stream_id, const char *why, bool charge)
{
    log_debug("client: stream %d: malformed request (%s): reset with PROTOCOL_ERROR", stream_id, why);
    s->h2req.bad = true;
    s->start_due = false;
    nghttp2_submit_rst_stream(d->h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_PROTOCOL_ERROR);
    if (charge)
        charge_reset(d, s);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    struct dconn *d = user_data;
    struct stream *s = frame->hd.stream_id == d->block_id
                           ? d->block_stream
                           : nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL || s->h2req.bad)
        return 0;
    const char *why = NULL;
    if (h2_check_req_field(&s->h2req, frame->headers.cat != NGHTTP2_HCAT_REQUEST, name, namelen, value, valuelen,
                           &why) != H2_CHECK_OK) {
        malformed(d, s, frame->hd.stream_id, why, true);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the rest of the block is decoded, not handed to us */
    }
    int rc = request_on_header(s, name, namelen, value, valuelen);
    if (rc == GR_ERR_LIMIT) {
        /* Far past the header limits (an HPACK bomb: small wire bytes that
         * decode large): stop the block here. nghttp2 then decodes the rest
         * for its table only, hands us no field, and skips its resets
         * (the stream is closing): ENHANCE_YOUR_CALM, which gRPC clients
         * read as RESOURCE_EXHAUSTED, not INTERNAL_ERROR. */
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
        /* A client that read our SETTINGS_MAX_HEADER_LIST_SIZE does not send
         * twice it: the connection ends here, as HAProxy ends it (its call
         * gets the reset first, which gRPC clients read as
         * RESOURCE_EXHAUSTED, not to be retried). Going on would mean
         * decoding the rest of this block for the HPACK table, and the next
         * one: an attacker's connection cost two to three times as much. */
        if (d->guard.ended)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        h2_goaway_hold(d, frame->hd.stream_id, "a request header block far past the listener's limits");
        /* And not a byte more of it is decoded: nghttp2 stops here, and is
         * not fed again (feed). */
        return NGHTTP2_ERR_PAUSE;
    }
    return rc == GR_OK ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dconn *d = user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM && !d->sleep.reviving) {
        /* The client cancels a young call (rapid reset, CVE-2023-44487). */
        struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s != NULL && ev_now(d->base.io.w->loop) - s->born < H2_PREMATURE_RESET_S) {
            d->guard.client_rst = frame->hd.stream_id;
            h2_goaway_spend_reset(d, "too many calls reset by the client");
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING) {
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && d->drain == DRAIN_NOTICE &&
            memcmp(frame->ping.opaque_data, h2_goaway_drain_ping, sizeof(h2_goaway_drain_ping)) == 0)
            h2_goaway_drain_final(d);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_SETTINGS) {
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            h2_hibernate_on_ack(&d->sleep);
            conn_timer_clear(&d->base.io.timer, CONN_TIMER_KEEPALIVE);
        } else if (d->hdr_wait < 0) {
            headers_done(d, -1); /* the preface and the client's SETTINGS are in */
        }
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct stream *s = frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == d->block_id
                           ? d->block_stream
                           : nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (frame->hd.type == NGHTTP2_HEADERS)
        d->block_id = 0;
    if (s == NULL || s->h2req.bad)
        return 0;
    bool head = frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
    if (head)
        headers_done(d, frame->hd.stream_id);
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    const char *why = NULL;
    if (frame->hd.type == NGHTTP2_HEADERS ? h2_check_req_block(&s->h2req, !head, end, &why) != H2_CHECK_OK
                                          : end && h2_check_req_end(&s->h2req, &why) != H2_CHECK_OK) {
        malformed(d, s, frame->hd.stream_id, why, frame->hd.type == NGHTTP2_HEADERS);
        return 0;
    }
    if (head) {
        if (request_headers_ready(s)) {
            s->start_due = true; /* at the end of the read (start_calls) */
            if (d->start_from == 0 || s->id < d->start_from)
                d->start_from = s->id;
        }
    }
    if (end)
        stream_on_req_end(s);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data)
{
    (void)flags;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    const char *why = NULL;
    if (s == NULL || s->h2req.bad || h2_check_req_data(&s->h2req, len, &why) != H2_CHECK_OK) {
        if (why != NULL)
            malformed(user_data, s, stream_id, why, false);
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    request_on_data(s, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dconn *d = user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM && !d->sleep.reviving) {
        /* A reset the client provoked (MadeYouReset, CVE-2025-8671): DATA
         * past the window, a bad or refused request... */
        h2_guard_sent_rst(&d->guard, frame->hd.stream_id);
        bool call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id) != NULL;
        if (!h2_guard_provoked(frame->rst_stream.error_code, call))
            return 0;
        if (frame->rst_stream.error_code == NGHTTP2_FLOW_CONTROL_ERROR) /* we never send it: DATA past a window */
            h2_common_withhold_window(session, (int32_t)d->base.cfg->stream_buffer);
        if (d->rst_ahead > 0)
            d->rst_ahead--; /* charged already (charge_reset) */
        else
            h2_goaway_spend_reset(d, "too many streams reset because of the client");
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.last_stream_id == INT32_MAX && d->drain == DRAIN_NOTICE &&
        nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE, h2_goaway_drain_ping) != 0)
        h2_goaway_drain_final(d); /* out of memory for the PING: the final GOAWAY without it */
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA)
        d->guard.answered = true; /* the client's next PING is free */
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* The answer is complete but the client is still sending: tell it to
     * stop, as RFC 9113 8.1 allows, so the stream can close. */
    if (s != NULL && !stream_req_ended(s))
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    struct dconn *d = user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!d->sleep.reviving)
        h2_guard_closed(&d->guard, stream_id);
    if (stream_id == d->block_id)
        d->block_id = 0;
    if (s != NULL) {
        /* A call that ended well (not reset by the client, even with
         * NO_ERROR) gives a reset token back. */
        if (error_code == NGHTTP2_NO_ERROR && stream_id != d->guard.client_rst)
            h2_bucket_give(&d->guard.resets, dconn_reset_burst(d), 1);
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_on_down_close(s, error_code);
        call_ended(d);
    }
    dconn_busy(d);
    return 0;
}

/* nghttp2 is about to reset a stream for what the client sent on it (a
 * WINDOW_UPDATE past 2^31-1, a refused stream...: MadeYouReset): a call of
 * this read that has not started never does, and the reset is charged now,
 * not when it is sent, so that a read full of them ends the connection
 * within that read (d_on_read feeds nghttp2 in slices). */
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code,
                                 void *user_data)
{
    (void)lib_error_code;
    struct dconn *d = user_data;
    if (frame->hd.stream_id == 0 || d->sleep.reviving)
        return 0; /* a connection error: the session ends */
    charge_reset(d, nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    return 0;
}

/* The end of a read: the calls whose heads it completed start, in stream
 * order, unless their stream was reset meanwhile (by the client: the stream
 * is gone; by nghttp2: start_due is cleared) or the connection is ending. A
 * read of provoked resets thus costs the backend nothing. */
static void start_calls(struct dconn *d)
{
    int32_t from = d->start_from;
    d->start_from = 0;
    struct gr_list *head = &d->base.streams, *it = head;
    while (it->prev != head && container_of(it->prev, struct stream, down_link)->id >= from)
        it = it->prev;
    while (it != head) {
        struct stream *s = container_of(it, struct stream, down_link);
        it = it->next;
        if (!s->start_due)
            continue;
        s->start_due = false;
        if (!d->guard.ended && !d->goaway && s->att == ATT_IDLE)
            stream_start(s);
    }
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    (void)user_data;
    log_debug("client: %.*s", (int)len, msg);
    return 0;
}

/* Creates d's nghttp2 session and queues our SETTINGS and connection
 * window (the listener's). Returns GR_OK or GR_ERR_NOMEM. */
static int new_session(struct dconn *d)
{
    struct worker *w = d->base.io.w;
    const struct gr_listener_cfg *l = d->base.cfg;
    if (nghttp2_session_server_new3(&d->h2, w->h2s->cbs, d, w->h2s->opt, &w->h2mem.mem) != 0) {
        d->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l->stream_buffer},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->max_request_headers},
    };
    if (nghttp2_submit_settings(d->h2, NGHTTP2_FLAG_NONE, iv, GR_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(d->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)l->connection_window) != 0) {
        nghttp2_session_del(d->h2);
        d->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    return GR_OK;
}

/* A hibernated connection is about to read: a new session that carries on
 * where the old one stopped. */
static int wake(struct dconn *d)
{
    int rc = new_session(d);
    if (rc != GR_OK)
        return rc;
    rc = h2_hibernate_revive(&d->sleep, d->h2);
    if (rc != GR_OK) {
        nghttp2_session_del(d->h2);
        d->h2 = NULL;
        return rc;
    }
    struct worker *w = d->base.io.w;
    d->busy_at = ev_now(w->loop);
    d->asleep = false;
    stats_add(stats_block(w->stats, d->base.cfg->stats), L_HIBERNATED, (uint64_t)-1);
    if (d->drain == DRAIN_NONE)
        gr_list_insert_tail(&w->h2s->lru, &d->lru_link);
    log_debug("client connection wakes (new HTTP/2 session)");
    return GR_OK;
}

/* One step towards hibernation of an idle connection. */
static enum h2_idle idle_step(struct dconn *d)
{
    struct conn *c = &d->base.io;
    if (d->h2 == NULL)
        return H2_IDLE_ASLEEP;
    if (!gr_list_empty(&d->base.streams))
        return H2_IDLE_BUSY;
    if (c->state != CONN_OPEN || c->wbuf.len > 0)
        return H2_IDLE_WAIT;
    uint8_t wu[H2_WINDOW_UPDATE_LEN];
    size_t wu_len;
    enum h2_idle st = h2_hibernate_step(&d->sleep, d->h2, (int32_t)d->base.cfg->connection_window, wu, &wu_len);
    if (st == H2_IDLE_WAIT || st == H2_IDLE_BUSY) {
        conn_want_flush(c); /* a SETTINGS may be queued */
        return st;
    }
    nghttp2_session_del(d->h2);
    d->h2 = NULL;
    d->asleep = true;
    uint64_t *b = stats_block(c->w->stats, d->base.cfg->stats);
    stats_add(b, L_HIBERNATED, 1);
    stats_add(b, L_HIBERNATIONS, 1);
    if (wu_len > 0) {
        if (buf_append(&c->wbuf, &c->w->chunks, wu, wu_len) != GR_OK) {
            conn_close(c, GR_ERR_NOMEM, "out of memory");
            return H2_IDLE_ASLEEP;
        }
        conn_want_flush(c);
    }
    log_debug("client connection hibernates (idle, HTTP/2 session freed)");
    return H2_IDLE_ASLEEP;
}

/* The worker's periodic pass over its least recently busy connections. */
static void on_hibernate(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct h2_server_state *st = container_of(t, struct h2_server_state, hibernate);
    ev_tstamp now = ev_now(loop);
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &st->lru) {
        struct dconn *d = container_of(it, struct dconn, lru_link);
        ev_tstamp idle = now - d->busy_at;
        if (idle < st->hibernate_min)
            break; /* the rest are busier still */
        if (idle < (ev_tstamp)d->base.cfg->hibernate_after_ms / 1000.0)
            continue;
        switch (idle_step(d)) {
        case H2_IDLE_ASLEEP:
            gr_list_remove(&d->lru_link);
            d->base.io.w->sessions_freed++;
            break;
        case H2_IDLE_BUSY:
            d->busy_at = now; /* look again after another hibernate_after */
            gr_list_remove(&d->lru_link);
            gr_list_insert_tail(&st->lru, &d->lru_link);
            break;
        case H2_IDLE_WAIT: break;
        }
    }
}

/* nghttp2 reads a client's bytes this many at a time: a budget spent in
 * one slice ends the connection before the next is decoded. */
#define FEED_SLICE (8 * 1024)

/* Hands n bytes to nghttp2, slice by slice, until what they hold ends the
 * connection (a GOAWAY is queued). Returns what nghttp2_session_mem_recv
 * returned last. */
static ssize_t feed(struct dconn *d, const uint8_t *p, size_t n)
{
    ssize_t rv = 0;
    for (size_t at = 0; at < n && !d->goaway && rv >= 0; at += FEED_SLICE)
        rv = nghttp2_session_mem_recv(d->h2, p + at, n - at < FEED_SLICE ? n - at : FEED_SLICE);
    return rv;
}

/* Whether d has opened no call yet, has the client's preface and SETTINGS,
 * and may hibernate. */
static bool unused(struct dconn *d)
{
    return d->h2 != NULL && !d->goaway && d->hdr_wait == 0 && gr_list_linked(&d->lru_link) &&
           nghttp2_session_get_last_proc_stream_id(d->h2) == 0;
}

/* A connection that has opened no call yet sleeps once it said nothing for
 * H2_NAP_S (CONN_TIMER_NAP), not hibernate_after later, and before the
 * client acknowledged our SETTINGS if need be: most of what a fresh
 * connection costs is its session (nghttp2's 16 KiB frame buffer among
 * it), and clients that connect in a burst and stay idle would each hold
 * it that long. A client that then calls wakes it as any other. */
static void sleep_if_unused(struct dconn *d)
{
    if (unused(d) && idle_step(d) == H2_IDLE_ASLEEP) {
        gr_list_remove(&d->lru_link);
        d->base.io.w->sessions_freed++;
    }
}

static int d_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct dconn *d = dconn_of(c);
    if (d->held && (d->dropped += (uint32_t)len) > HOLD_DROP)
        conn_pause_read(c);
    if (d->held || (d->goaway && d->h2 == NULL))
        return GR_OK; /* dropped; or closing with a GOAWAY written while it slept: no session to wake */
    if (d->h2 == NULL && d->drain == DRAIN_NOTICE && h2_common_is_ping_ack(data, len, h2_goaway_drain_ping)) {
        h2_goaway_drain_final(d); /* the client saw the drain's GOAWAY, and opened nothing: no session to wake */
        return GR_OK;
    }
    if (d->h2 == NULL && h2_hibernate_take_ack(&d->sleep, data, len)) {
        conn_timer_clear(&c->timer, CONN_TIMER_KEEPALIVE); /* as on_frame_recv does for an ACK */
        return GR_OK;
    }
    if (d->h2 == NULL) {
        int rc = wake(d);
        if (rc != GR_OK)
            return rc;
    }
    if (d->guard.ended)
        return GR_OK; /* a GOAWAY is on its way: nghttp2 would ignore it all */
    uint32_t code;
    const char *why = NULL;
    /* The one scan of the client's frame headers: the guard's verdicts,
     * and where the bytes stand between frames, for hibernation and for a
     * header block whose stream was reset inside it (nghttp2 reads the rest
     * of the block, and tells us of nothing until it ends). */
    size_t ok = h2_guard_scan(&d->guard, &d->sleep.frames, d->h2, data, len, dconn_now_ms(d), &code, &why);
    ssize_t rv = feed(d, data, ok);
    if (rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
        return h2_goaway_flooded(d, (int)rv);
    if (rv < 0) {
        log_debug("client connection: %s", nghttp2_strerror((int)rv));
        return GR_ERR_PROTO;
    }
    if (code == NGHTTP2_ENHANCE_YOUR_CALM && gr_list_empty(&d->base.streams) && !d->goaway)
        h2_goaway_hold(d, nghttp2_session_get_last_proc_stream_id(d->h2), why);
    else if (code != NGHTTP2_NO_ERROR)
        h2_goaway_refuse(d, code, why);
    else if (unused(d))
        conn_timer_set(&c->timer, CONN_TIMER_NAP, H2_NAP_S);
    if (d->start_from != 0)
        start_calls(d);
    return GR_OK;
}

static ssize_t d_pull(struct conn *c, const uint8_t **data)
{
    struct dconn *d = dconn_of(c);
    return d->h2 != NULL && !d->base.broken ? nghttp2_session_mem_send(d->h2, data) : 0;
}

static size_t d_backlog(struct conn *c)
{
    struct dconn *d = dconn_of(c);
    return d->h2 != NULL ? nghttp2_session_get_outbound_queue_size(d->h2) : 0;
}

static bool d_done(struct conn *c)
{
    struct dconn *d = dconn_of(c);
    if (d->held)
        return false; /* until the GOAWAY grace ends (CONN_TIMER_IDLE) */
    return d->base.broken || (d->h2 != NULL && !nghttp2_session_want_read(d->h2) && !nghttp2_session_want_write(d->h2));
}

static void d_on_close(struct conn *c, int err, const char *why)
{
    struct dconn *d = dconn_of(c);
    if (err != GR_OK && err != GR_ERR_CLOSED)
        log_debug("client connection closed: %s", why);
    gr_list_remove(&d->lru_link);
    downstream_fini(&d->base);
    stream_close_all(&d->base);
    if (d->h2 != NULL)
        c->w->sessions_freed++; /* its blocks wait in h2mem's free lists for housekeeping to give back */
    nghttp2_session_del(d->h2);
    d->h2 = NULL;
}

static void d_destroy(struct conn *c)
{
    struct dconn *d = dconn_of(c);
    if (d->asleep)
        stats_add(stats_block(c->w->stats, d->base.cfg->stats), L_HIBERNATED, (uint64_t)-1);
    worker_conn_release(c->w, d->base.cfg);
    slab_free(&c->w->h2s->slab, d);
}

static void d_on_deadline(struct conn *c, enum conn_timer_kind kind)
{
    struct dconn *d = dconn_of(c);
    switch (kind) {
    case CONN_TIMER_IDLE:
        if (d->held)
            conn_close(c, GR_ERR_LIMIT, "held past its GOAWAY (frames with no use)");
        else if (d->goaway)
            conn_close(c, GR_ERR_IO, "the client did not take its GOAWAY");
        else if (gr_list_empty(&d->base.streams)) {
            stats_limit_hit(c->w->stats, d->base.cfg, LIMIT_IDLE_TIMEOUT);
            h2_goaway_send(d, NGHTTP2_NO_ERROR, "idle_timeout");
        }
        break;
    case CONN_TIMER_HEADER:
        if (d->hdr_wait < 0) {
            stats_limit_hit(c->w->stats, d->base.cfg, LIMIT_HEADERS_TIMEOUT);
            conn_close(c, GR_ERR_IO, "no HTTP/2 preface and SETTINGS within request_headers_timeout");
        } else if (d->hdr_wait > 0 && d->h2 != NULL &&
                   (nghttp2_session_get_stream_user_data(d->h2, d->hdr_wait) != NULL ||
                    h2_common_frames_in_block(&d->sleep.frames))) {
            stats_limit_hit(c->w->stats, d->base.cfg, LIMIT_HEADERS_TIMEOUT);
            h2_goaway_send(d, NGHTTP2_PROTOCOL_ERROR,
                           "request header block not complete within request_headers_timeout");
        } else {
            d->hdr_wait = 0; /* its stream was reset, and the block ended since */
        }
        break;
    case CONN_TIMER_KEEPALIVE:
        h2_goaway_send(d, NGHTTP2_SETTINGS_TIMEOUT, "our SETTINGS not acknowledged within request_headers_timeout");
        break;
    case CONN_TIMER_NAP: sleep_if_unused(d); break;
    case CONN_TIMER_WRITE: /* calls whose client has not taken their response for stream_write_timeout (stream.c) */
        stream_write_timeouts(&d->base, ev_now(c->w->loop));
        break;
    case CONN_TIMER_AGE: /* max_connection_age: the drain; then its grace is over: the cut */
        if (d->drain == DRAIN_NONE) {
            h2_goaway_drain_notice(d, "max_connection_age");
            if (c->state != CONN_CLOSED)
                conn_timer_set(&c->timer, CONN_TIMER_AGE, (ev_tstamp)d->base.cfg->max_connection_age_grace_ms / 1e3);
        } else {
            (void)h2_goaway_drain(&d->base, "grelay closed the connection at max_connection_age");
        }
        break;
    case CONN_TIMER_DRAIN: /* the drain PING's ACK did not come */ h2_goaway_drain_final(d); break;
    default: break;
    }
}

/* Arms the deadlines of a new connection accepted at `accepted`. */
static void arm_deadlines(struct dconn *d, ev_tstamp accepted)
{
    const struct gr_listener_cfg *l = d->base.cfg;
    struct conn_timer *t = &d->base.io.timer;
    if (l->idle_timeout_ms > 0)
        conn_timer_set(t, CONN_TIMER_IDLE, (ev_tstamp)l->idle_timeout_ms / 1e3);
    if (l->request_headers_timeout_ms > 0) {
        ev_tstamp rht = (ev_tstamp)l->request_headers_timeout_ms / 1e3;
        d->hdr_wait = -1;
        conn_timer_set_at(t, CONN_TIMER_HEADER, (accepted > 0 ? accepted : ev_now(t->loop)) + rht);
        conn_timer_set(t, CONN_TIMER_KEEPALIVE, rht); /* our SETTINGS go out now */
    }
    if (l->max_connection_age_ms > 0) { /* ±10%, per connection: a fleet does not reconnect at once */
        double jitter = 0.9 + 0.2 * (double)(gr_rand(&d->base.io.w->rng) % 1001) / 1000.0;
        conn_timer_set(t, CONN_TIMER_AGE, (ev_tstamp)l->max_connection_age_ms / 1e3 * jitter);
    }
}

/* Response body provider: pulls from the stream, then sends its trailers. */
static ssize_t resp_read(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user_data)
{
    (void)src;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool eof = false;
    size_t n = stream_peek_resp(s, length, &eof), cnt = 0;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* send_data moves the bytes */
    else
        n = stream_pull_resp(s, out, length, &eof);
    nghttp2_nv *nva = eof ? stream_trailers_nv(s, &cnt) : NULL;
    return h2_common_data_result(session, stream_id, n, eof, nva, cnt, flags);
}

/* A DATA frame resp_read left uncopied (NGHTTP2_DATA_FLAG_NO_COPY): its
 * header, then its payload moved from the call's queue, chunk by chunk,
 * into the connection's write buffer, right where nghttp2_session_mem_send
 * stands (d_pull's caller appends what it returns to the same buffer).
 * grelay never pads, so there is no padding to write. One copy of each
 * payload byte fewer than nghttp2's frame buffer, and none for a chunk
 * that moves whole. */
static int send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *user_data)
{
    (void)session;
    struct dconn *d = user_data;
    /* The call resp_read just found: nghttp2 calls this within the same
     * nghttp2_session_mem_send, right after that read (and not at all for
     * a stream closed since), so nothing can have ended the call between
     * the two; no second lookup. */
    struct stream *s = src->ptr;
    struct conn *c = &d->base.io;
    if (frame->data.padlen > 0 || buf_append(&c->wbuf, &c->w->chunks, framehd, 9) != GR_OK ||
        stream_move_resp(s, &c->wbuf, length) != GR_OK)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* downstream_ops. Streams call respond/resume/reset only while they are
 * open, and a connection with open streams is awake, so h2 is set. */
static int h2_respond(struct downstream *base, struct stream *s, const nghttp2_nv *nva, size_t n, bool end_stream)
{
    struct dconn *d = dconn_from(base);
    nghttp2_data_provider prd = {.source = {.ptr = s}, .read_callback = resp_read};
    int rv = nghttp2_submit_response(d->h2, stream_id(s), nva, n, end_stream ? NULL : &prd);
    conn_want_flush(&base->io);
    return rv == 0 ? GR_OK : GR_ERR_PROTO;
}

static void h2_resume(struct downstream *base, struct stream *s)
{
    nghttp2_session_resume_data(dconn_from(base)->h2, stream_id(s));
    conn_want_flush(&base->io);
}

static void h2_consume(struct downstream *base, struct stream *s, size_t n)
{
    struct dconn *d = dconn_from(base);
    if (d->h2 == NULL)
        return;
    if (s != NULL)
        nghttp2_session_consume(d->h2, stream_id(s), n);
    else
        nghttp2_session_consume_connection(d->h2, n);
    conn_want_flush(&base->io);
}

static void h2_reset(struct downstream *base, struct stream *s, uint32_t code)
{
    if (nghttp2_submit_rst_stream(dconn_from(base)->h2, NGHTTP2_FLAG_NONE, stream_id(s), code) != 0)
        downstream_break(base); /* out of memory even for that */
    conn_want_flush(&base->io);
}

static const struct downstream_ops h2_downstream_ops = {
    .respond = h2_respond,
    .resume = h2_resume,
    .consume = h2_consume,
    .reset = h2_reset,
    .drain = h2_goaway_drain,
};

static const struct conn_ops dconn_ops = {
    .on_read = d_on_read,
    .pull = d_pull,
    .done = d_done,
    .on_connect = NULL,
    .on_close = d_on_close,
    .destroy = d_destroy,
    .on_deadline = d_on_deadline,
    .backlog = d_backlog,
};

bool h2_server_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl, const uint8_t *early,
                      size_t early_len, ev_tstamp accepted)
{
    struct h2_server_state *st = w->h2s;
    struct dconn *d = slab_alloc(&st->slab);
    if (d != NULL) {
        d->base.io.w = w;
        d->base.cfg = l;
    }
    if (d == NULL || new_session(d) != GR_OK) {
        if (d != NULL)
            slab_free(&st->slab, d);
        SSL_free(ssl);
        close(fd);
        worker_conn_release(w, l);
        return false;
    }
    h2_hibernate_init(&d->sleep);
    h2_guard_init(&d->guard, dconn_reset_burst(d), dconn_now_ms(d));
    downstream_init(&d->base, w, l, &h2_downstream_ops, false);
    conn_init_accepted(&d->base.io, w, fd, &dconn_ops);
    arm_deadlines(d, accepted);
    gr_list_init(&d->lru_link);
    if (l->hibernate_after_ms > 0) {
        d->busy_at = ev_now(w->loop);
        gr_list_insert_tail(&st->lru, &d->lru_link);
    }
    if (ssl != NULL)
        conn_adopt_tls(&d->base.io, ssl);
    if (early_len > 0 && d_on_read(&d->base.io, early, early_len) != GR_OK) {
        conn_close(&d->base.io, GR_ERR_PROTO, "protocol error from peer");
        return false;
    }
    conn_want_flush(&d->base.io);
    return true;
}

int h2_server_worker_init(struct worker *w)
{
    struct h2_server_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return GR_ERR_NOMEM;
    w->h2s = st;
    slab_pool_init(&st->slab, sizeof(struct dconn), 64);
    gr_list_init(&st->lru);
    if (nghttp2_session_callbacks_new(&st->cbs) != 0 || h2_common_options(&st->opt) != GR_OK)
        return GR_ERR_NOMEM;
    /* grelay checks the requests itself (h2_check.h): nghttp2's checks of
     * the same rules cost ~2,000 instructions a call. */
    nghttp2_option_set_no_http_messaging(st->opt, 1);
    nghttp2_session_callbacks_set_on_begin_headers_callback(st->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(st->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(st->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(st->cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(st->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(st->cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(st->cbs, on_error);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(st->cbs, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_send_data_callback(st->cbs, send_data);
    ev_timer_init(&st->hibernate, on_hibernate, 0.0, 0.0);
    h2_server_worker_reload(w);
    return GR_OK;
}

void h2_server_worker_reload(struct worker *w)
{
    struct h2_server_state *st = w->h2s;
    st->hibernate_min = 0;
    for (size_t i = 0; i < w->cfg->n_listeners; i++) {
        ev_tstamp after = (ev_tstamp)w->cfg->listeners[i].hibernate_after_ms / 1000.0;
        if (after > 0 && (st->hibernate_min == 0 || after < st->hibernate_min))
            st->hibernate_min = after;
    }
    /* Twice per shortest hibernate_after: a connection sleeps within 1.5x of it
     * (one pass asks the client to empty its HPACK table, the next one lets go). */
    ev_timer_stop(w->loop, &st->hibernate);
    ev_timer_set(&st->hibernate, st->hibernate_min / 2, st->hibernate_min / 2);
    if (st->hibernate_min > 0)
        ev_timer_start(w->loop, &st->hibernate);
}

void h2_server_worker_destroy(struct worker *w)
{
    struct h2_server_state *st = w->h2s;
    if (st == NULL)
        return;
    if (w->loop != NULL)
        ev_timer_stop(w->loop, &st->hibernate);
    h2_common_free(st->cbs, st->opt);
    slab_pool_destroy(&st->slab);
    free(st);
    w->h2s = NULL;
}

void h2_server_worker_trim(struct worker *w)
{
    struct h2_server_state *st = w->h2s;
    if (!gr_list_empty(&w->dconns))
        return;
    size_t per_slab = st->slab.per_slab;
    slab_pool_destroy(&st->slab);
    slab_pool_init(&st->slab, sizeof(struct dconn), per_slab);
}
