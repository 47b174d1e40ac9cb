/* How a downstream HTTP/2 connection ends (h2_dconn.h): the two-phase
 * drain, GOAWAYs (through the session, or written by hand while it
 * hibernates), refusals of a client that broke the rules, and the hold of
 * an abusive one. */
#include "grelay/h2_dconn.h"
#include "grelay/log.h"
#include "grelay/stats.h"
#include "grelay/stream.h"

/* ---- Drain, grpc-go's graceful close: a GOAWAY with the last stream id
 * 2^31-1 tells the client to open no more streams here, and a PING after
 * it; when the PING's ACK comes (the client has seen the GOAWAY), the final
 * GOAWAY with the real last stream id; the connection closes once its last
 * call ends. The ACK is not the end of what the client sent before it saw
 * the GOAWAY: grpc-core writes its PING ACK ahead of the HEADERS of streams
 * it had started but not yet written, in the same write. So the final
 * GOAWAY is not built in the middle of the read that brings the ACK: nghttp2
 * would take the streams behind the ACK (a GOAWAY counts only once it is
 * sent), grelay would forward them, and the GOAWAY would name an older last
 * stream: the client fails them as never processed (UNAVAILABLE "GOAWAY
 * received"), the backend has them. It is built when the loop has read
 * what it could and is about to sleep (DRAIN_ACKED, final_task), and sent
 * then, with no read in between. A hibernated connection gets the
 * same frames written by hand, and an ACK that comes alone does not wake
 * its session. ---- */

/* The final GOAWAY goes this long after the PING even without its ACK. */
#define DRAIN_PING_WAIT_S 1.0
const uint8_t h2_goaway_drain_ping[8] = {'g', 'r', 'd', 'r', 'a', 'i', 'n', '!'};

/* Queues frames written by hand (a hibernated connection has no session). */
static bool write_raw(struct dconn *d, const uint8_t *p, size_t n)
{
    struct conn *c = &d->base.io;
    if (buf_append(&c->wbuf, &c->w->chunks, p, n) != GR_OK) {
        conn_close(c, GR_ERR_NOMEM, "out of memory");
        return false;
    }
    conn_want_flush(c);
    return true;
}

void h2_goaway_drain_notice(struct dconn *d, const char *why)
{
    struct conn *c = &d->base.io;
    if (d->drain != DRAIN_NONE || d->goaway || c->state == CONN_CLOSED)
        return;
    log_debug("client connection: %s: GOAWAY 2^31-1 and PING", why);
    d->drain = DRAIN_NOTICE;
    stats_add(stats_block(c->w->stats, d->base.cfg->stats), L_DRAINED_CONNS, 1);
    gr_list_remove(&d->lru_link); /* a draining connection does not hibernate */
    if (d->h2 != NULL) {          /* the PING once the GOAWAY is out (on_frame_send): nghttp2 sends PINGs first */
        if (nghttp2_submit_shutdown_notice(d->h2) != 0) {
            conn_close(c, GR_ERR_NOMEM, "out of memory");
            return;
        }
        conn_want_flush(c);
    } else {
        uint8_t frames[H2_GOAWAY_LEN + H2_PING_LEN];
        h2_common_goaway(INT32_MAX, NGHTTP2_NO_ERROR, frames);
        h2_common_ping(h2_goaway_drain_ping, frames + H2_GOAWAY_LEN);
        if (!write_raw(d, frames, sizeof(frames)))
            return;
    }
    conn_timer_set(&c->timer, CONN_TIMER_DRAIN, DRAIN_PING_WAIT_S);
}

/* The final GOAWAY, now: its last stream is the last one nghttp2 took. */
static void drain_final_now(struct dconn *d)
{
    struct conn *c = &d->base.io;
    if (d->drain == DRAIN_FINAL || d->goaway || c->state == CONN_CLOSED)
        return;
    d->drain = DRAIN_FINAL;
    conn_timer_clear(&c->timer, CONN_TIMER_DRAIN);
    if (d->h2 == NULL) { /* no call: the GOAWAY, and the close */
        h2_goaway_send(d, NGHTTP2_NO_ERROR, "drained");
        return;
    }
    int32_t last = nghttp2_session_get_last_proc_stream_id(d->h2);
    log_debug("client connection: final GOAWAY, last stream %d", last);
    if (nghttp2_submit_goaway(d->h2, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0) != 0) {
        conn_close(c, GR_ERR_NOMEM, "out of memory");
        return;
    }
    conn_want_flush(c);
}

/* worker->dirty, before the loop sleeps: every read of this turn is in. */
static void final_task(struct gr_task *t) { drain_final_now(container_of(t, struct dconn, final_goaway)); }

void h2_goaway_drain_final(struct dconn *d)
{
    struct conn *c = &d->base.io;
    if (d->drain == DRAIN_ACKED)
        return; /* final_task is due */
    if (d->drain == DRAIN_NOTICE && d->h2 != NULL && c->state != CONN_CLOSED && !d->goaway) {
        /* Called from the read that brought the ACK: the frames behind it first. */
        d->drain = DRAIN_ACKED;
        conn_timer_clear(&c->timer, CONN_TIMER_DRAIN);
        d->final_goaway.run = final_task;
        worker_defer(c->w, &d->final_goaway, false);
        return;
    }
    drain_final_now(d);
}

/* downstream_ops.drain: cut NULL begins the drain; otherwise the final
 * GOAWAY goes now, the calls left are cut, and the client has
 * GOAWAY_GRACE_S to take what is written. */
size_t h2_goaway_drain(struct downstream *base, const char *cut)
{
    struct dconn *d = dconn_from(base);
    if (cut == NULL) {
        h2_goaway_drain_notice(d, "draining");
        return 0;
    }
    drain_final_now(d);
    size_t n = stream_cut_all(base, cut);
    if (base->io.state != CONN_CLOSED && !d->goaway) {
        d->goaway = true;
        conn_timer_set(&base->io.timer, CONN_TIMER_IDLE, GOAWAY_GRACE_S);
    }
    return n;
}

/* Ends the connection with a GOAWAY. Awake: through the session, which then
 * wants neither to read nor to write once the frame is out, so the
 * connection closes after that flush. Hibernating: a GOAWAY frame built from
 * what the connection kept (its last stream id), written as is: waking a
 * session (~25 KiB, and the connection's past replayed) only to say goodbye
 * would cost the most on the connections hibernation makes cheap, all of
 * them at once when many reach idle_timeout together. */
void h2_goaway_send(struct dconn *d, uint32_t code, const char *why)
{
    struct conn *c = &d->base.io;
    if (d->goaway)
        return;
    log_debug("client connection: %s: GOAWAY %s", why, nghttp2_http2_strerror(code));
    d->goaway = true;
    if (d->h2 != NULL) {
        if (nghttp2_session_terminate_session(d->h2, code) != 0) {
            conn_close(c, GR_ERR_NOMEM, why);
            return;
        }
    } else {
        uint8_t frame[H2_GOAWAY_LEN];
        h2_hibernate_goaway(&d->sleep, code, frame);
        if (buf_append(&c->wbuf, &c->w->chunks, frame, sizeof(frame)) != GR_OK) {
            conn_close(c, GR_ERR_NOMEM, why);
            return;
        }
        d->base.broken = true; /* closes once wbuf is written */
    }
    conn_timer_set(&c->timer, CONN_TIMER_IDLE, GOAWAY_GRACE_S);
    conn_want_flush(c);
}

/* The client broke the protocol in a way nghttp2 does not see, or spent a
 * budget: h2_goaway_send() with code, nothing it sends read any more, and for
 * ENHANCE_YOUR_CALM, the connection and its calls end as soon as the
 * GOAWAY is handed to the socket, read or not. */
void h2_goaway_refuse(struct dconn *d, uint32_t code, const char *why)
{
    log_info("client connection: %s: GOAWAY %s", why, nghttp2_http2_strerror(code)); /* goaway's is debug */
    d->guard.ended = true;
    conn_pause_read(&d->base.io);
    if (code == NGHTTP2_ENHANCE_YOUR_CALM) {
        conn_set_hostile(&d->base.io);
        stats_limit_hit(d->base.io.w->stats, d->base.cfg, LIMIT_GLITCHES);
    }
    h2_goaway_send(d, code, why);
}

/* The connection ends on an abuse: a flood spent the glitch budget on a
 * connection with no call, or stream sid's header block went far past the
 * limits (an HPACK bomb; the caller reset that stream). GOAWAY
 * ENHANCE_YOUR_CALM names sid as the last stream, so the client reads that
 * reset (gRPC: RESOURCE_EXHAUSTED, not retried) and not a lost connection.
 * Nothing more is decoded, nor read past HOLD_DROP (so a client that leaves
 * is seen leaving), but it stays open for GOAWAY_GRACE_S, then closes with
 * its calls: an attacker blocks on its own writes, as HAProxy blocks it; closed at once, it
 * reconnected and attacked again (2,000 connections in 5 s of PING flood,
 * each a new session). Not nghttp2_session_terminate_session(): that sends
 * nothing after its GOAWAY, not even a reset queued before it. */
void h2_goaway_hold(struct dconn *d, int32_t sid, const char *why)
{
    struct conn *c = &d->base.io;
    log_info("client connection: %s: GOAWAY ENHANCE_YOUR_CALM, held %.0fs unread (last stream %d)", why, GOAWAY_GRACE_S,
             sid);
    d->guard.ended = true;
    d->held = true;
    stats_limit_hit(c->w->stats, d->base.cfg, LIMIT_GLITCHES);
    d->goaway = true;
    conn_set_hostile(c);
    gr_list_remove(&d->lru_link); /* nothing to hibernate: it only waits to close */
    if (nghttp2_submit_goaway(d->h2, NGHTTP2_FLAG_NONE, sid, NGHTTP2_ENHANCE_YOUR_CALM, NULL, 0) != 0) {
        conn_close(c, GR_ERR_NOMEM, why);
        return;
    }
    conn_timer_set(&c->timer, CONN_TIMER_IDLE, GOAWAY_GRACE_S);
    conn_want_flush(c);
}

/* nghttp2 gave up on a flooding client (more unsent ACKs than
 * max_outbound_ack, more CONTINUATIONs than max_continuations) and its
 * session is done: the client still gets a GOAWAY ENHANCE_YOUR_CALM, written
 * by hand, and the connection closes with it. */
int h2_goaway_flooded(struct dconn *d, int lib_error)
{
    struct conn *c = &d->base.io;
    uint8_t ga[H2_GOAWAY_LEN];
    h2_common_goaway(nghttp2_session_get_last_proc_stream_id(d->h2), NGHTTP2_ENHANCE_YOUR_CALM, ga);
    log_info("client connection: %s: GOAWAY ENHANCE_YOUR_CALM", nghttp2_strerror(lib_error));
    stats_limit_hit(c->w->stats, d->base.cfg, LIMIT_GLITCHES);
    d->guard.ended = true;
    conn_pause_read(c);
    conn_set_hostile(c);
    downstream_break(&d->base);
    return buf_append(&c->wbuf, &c->w->chunks, ga, sizeof(ga));
}

/* A reset that cost us a call: one token of the reset budget. */
void h2_goaway_spend_reset(struct dconn *d, const char *why)
{
    if (!d->guard.ended && !h2_bucket_take(&d->guard.resets, dconn_reset_burst(d), H2_RESET_RATE, 1, dconn_now_ms(d)))
        h2_goaway_refuse(d, NGHTTP2_ENHANCE_YOUR_CALM, why);
}
