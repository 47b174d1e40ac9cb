/* The call state machine with fake ops on both sides: a fake client
 * (downstream_ops) records what the call answers, a fake pool and upstream
 * (pool_acquire, upstream_ops) record what it asks upstream. stream.c is
 * included so its static handlers (timers) can be driven directly; the
 * real request.c, flow.c, retry.c, nv.c and router run with it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../src/stream.c"

#include "grelay/request.h"
#include "grelay/outlier.h"
#include "grelay/pool_eject.h"

#include <stdlib.h>
#include <string.h>

static const char *yaml = "listeners:\n"
                          "  - name: l\n"
                          "    address: 127.0.0.1:1\n"
                          "    virtual_hosts:\n"
                          "      - name: any\n"
                          "        domains: ['*']\n"
                          "        routes:\n"
                          "          - match: { service: retry.S }\n"
                          "            cluster: c\n"
                          "            retry_policy: { retry_on: [unavailable], num_retries: 2, per_try_timeout: 5s,\n"
                          "                            backoff: { base_interval: 1ms, max_interval: 1ms } }\n"
                          "          - { match: { prefix: / }, cluster: c }\n"
                          "clusters: [{name: c, endpoints: [{address: 127.0.0.1:7001}, {address: 127.0.0.1:7002}]}]\n";

/* ---- The fake pool and upstream. ---- */

enum acquire_mode { GRANT, QUEUE, LIMIT };

static struct {
    enum acquire_mode mode; /* what pool_acquire does */
    int acquired;           /* successful acquires */
    int released;           /* pool_release calls that let a slot go */
    int submits;            /* requests submitted */
    int submit_rc;          /* what submit returns */
    bool timeout_sent;      /* the last request carried grpc-timeout */
    int detaches;           /* detach calls */
    bool last_reset;        /* the last detach reset the stream */
    size_t up_consumed;     /* response bytes given back upstream (stream level) */
    uint32_t up_window;     /* the last window the upstream stream grew to (0: none) */
    int resumes;            /* request body resumes */
    size_t last_ep;         /* the endpoint of the last pick */
} up;

static int fake_conn; /* stands for an upconn: only its address is used */

static int op_submit(struct up_slot *sl, const nghttp2_nv *nva, size_t n, bool body)
{
    (void)body;
    up.submits++;
    up.timeout_sent = false;
    for (size_t i = 0; i < n; i++)
        if (nva[i].namelen == 12 && memcmp(nva[i].name, "grpc-timeout", 12) == 0)
            up.timeout_sent = true;
    sl->id = 2 * up.submits + 1;
    return up.submit_rc;
}
static void op_resume(struct up_slot *sl)
{
    (void)sl;
    up.resumes++;
}
static void op_consume(struct up_slot *sl, size_t n)
{
    (void)sl;
    up.up_consumed += n;
}
static void op_detach(struct up_slot *sl, bool reset)
{
    up.detaches++;
    up.last_reset = reset;
    sl->conn = NULL;
    sl->ops = NULL;
}
static void op_grow(struct up_slot *sl, uint32_t window)
{
    (void)sl;
    up.up_window = window;
}
static const struct upstream_ops fake_up_ops = {op_submit, op_resume, op_consume, op_detach, op_grow};

static void attach(struct up_slot *sl)
{
    sl->conn = (struct upconn *)&fake_conn;
    sl->ops = &fake_up_ops;
    sl->id = 0;
}

int pool_acquire(struct pool *p, struct up_slot *sl)
{
    if (up.mode == LIMIT)
        return GR_ERR_LIMIT;
    up.acquired++;
    sl->pool = p;
    if (up.mode == QUEUE)
        sl->queued = true;
    else
        attach(sl);
    return GR_OK;
}

void pool_release(struct up_slot *sl)
{
    if (sl->pool == NULL)
        return;
    up.released++;
    sl->pool = NULL;
    sl->queued = false;
}

/* What the attempts' ends told the pool (outlier ejection's input). */
static int outcomes[8], n_outcomes;
void pool_attempt_result(struct pool *p, int code)
{
    (void)p;
    if (n_outcomes < 8)
        outcomes[n_outcomes++] = code;
}

struct pool *wcluster_pick(struct wcluster *wc, bool retry, size_t last, struct lb_key key, size_t *idx)
{
    (void)key;
    *idx = retry ? (last + 1) % wc->n_pools : 0;
    up.last_ep = *idx;
    return wc->pools[*idx];
}

/* ---- The fake client. ---- */

static struct {
    int responds;         /* respond calls */
    int respond_rc;       /* what respond returns */
    bool ended;           /* the last respond ended the stream */
    int grpc_status;      /* grpc-status of a trailers-only respond, -1 otherwise */
    char status[4];       /* :status of the last respond */
    int resumes;          /* response body resumes */
    size_t consumed;      /* request bytes given back on the stream */
    size_t conn_consumed; /* request bytes given back at connection level */
    int resets;           /* RST_STREAMs */
} down;

static int d_respond(struct downstream *d, struct stream *s, const nghttp2_nv *nva, size_t n, bool end_stream)
{
    (void)d;
    (void)s;
    down.responds++;
    down.ended = end_stream;
    down.grpc_status = -1;
    memcpy(down.status, nva[0].value, 3);
    for (size_t i = 0; i < n; i++)
        if (nva[i].namelen == 11 && memcmp(nva[i].name, "grpc-status", 11) == 0)
            down.grpc_status = atoi((const char *)nva[i].value);
    return down.respond_rc;
}
static void d_resume(struct downstream *d, struct stream *s) { (void)d, (void)s, down.resumes++; }
static void d_consume(struct downstream *d, struct stream *s, size_t n)
{
    (void)d;
    if (s != NULL)
        down.consumed += n;
    else
        down.conn_consumed += n;
}
static void d_reset(struct downstream *d, struct stream *s, uint32_t code)
{
    (void)d, (void)s, (void)code;
    down.resets++;
}
static const struct downstream_ops fake_down_ops = {d_respond, d_resume, d_consume, d_reset, NULL};

/* ---- The fixture: a worker, a cluster of two fake pools, a client. ---- */

static struct gr_config *cfg;
static struct worker *w;
static struct downstream client;
static struct pool *pools[2];

static int setup(void **state)
{
    (void)state;
    char err[512];
    cfg = config_load_buffer("s.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL || worker_init(w, 0, cfg) != GR_OK)
        return -1;
    stream_cache_init(w);
    w->clusters = calloc(1, sizeof(*w->clusters));
    w->clusters[0] = calloc(1, sizeof(**w->clusters));
    for (int i = 0; i < 2; i++) {
        pools[i] = calloc(1, sizeof(struct pool));
        pools[i]->own = (struct endpoint){.weight = 1};
        snprintf(pools[i]->own.text, sizeof(pools[i]->own.text), "127.0.0.1:700%d", i + 1);
        pools[i]->own.address.text = pools[i]->own.text;
        pools[i]->ep = &pools[i]->own;
        pools[i]->cl = &cfg->clusters[0];
    }
    cfg->clusters[0].outlier.set = true; /* attempts' outcomes reach the fake pool_attempt_result */
    w->clusters[0]->cfg = &cfg->clusters[0];
    w->clusters[0]->pools = pools;
    w->clusters[0]->n_pools = 2;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        free(pools[i]);
    free(w->clusters[0]);
    free(w->clusters);
    worker_destroy(w);
    free(w);
    config_free(cfg);
    return 0;
}

static int reset_fakes(void **state)
{
    (void)state;
    memset(&up, 0, sizeof(up));
    memset(&down, 0, sizeof(down));
    memset(&client, 0, sizeof(client));
    client.io.w = w;
    w->rng = 0x9e3779b97f4a7c15ull; /* the same backoffs every run */
    client.io.state = CONN_CLOSED;  /* conn_want_flush does nothing */
    client.ops = &fake_down_ops;
    client.cfg = &cfg->listeners[0];
    gr_list_init(&client.streams);
    return 0;
}

static void header(struct stream *s, const char *name, const char *value)
{
    assert_int_equal(request_on_header(s, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value)),
                     GR_OK);
}

/* A call whose request headers (and, with end, END_STREAM) have arrived. */
static struct stream *call(const char *path, bool end, const char *timeout)
{
    struct stream *s = stream_new(&client, 1);
    assert_non_null(s);
    header(s, ":method", "POST");
    header(s, ":scheme", "http");
    header(s, ":authority", "svc");
    header(s, ":path", path);
    header(s, "content-type", "application/grpc");
    header(s, "te", "trailers");
    if (timeout != NULL)
        header(s, "grpc-timeout", timeout);
    request_on_headers_done(s);
    if (end)
        stream_on_req_end(s);
    return s;
}

static void resp_header(struct stream *s, const char *name, const char *value)
{
    assert_int_equal(
        s->up.ev->header(&s->up, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value)), GR_OK);
}

/* The upstream answers HEADERS 200 application/grpc. */
static void answer_headers(struct stream *s)
{
    resp_header(s, ":status", "200");
    resp_header(s, "content-type", "application/grpc");
    s->up.ev->headers_done(&s->up, false);
}

static void trailers(struct stream *s, const char *status)
{
    resp_header(s, "grpc-status", status);
    s->up.ev->headers_done(&s->up, true);
}

/* A unary call from HEADERS to the last frame, with the flow-control
 * credit checked both ways. */
static void unary_call_succeeds(void **state)
{
    (void)state;
    struct stream *s = call("/pkg.S/M", false, "5S");
    assert_int_equal(s->req_state, REQ_BODY);
    assert_int_equal(s->att, ATT_SUBMITTED);
    assert_int_equal(up.submits, 1);
    assert_true(up.timeout_sent);
    const uint8_t body[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    request_on_data(s, body, sizeof(body));
    stream_on_req_end(s);
    assert_int_equal(s->req_state, REQ_ENDED);
    uint8_t out[64];
    bool eof;
    assert_int_equal(s->up.ev->pull(&s->up, out, sizeof(out), &eof), sizeof(body));
    assert_true(eof);
    assert_int_equal(down.consumed, sizeof(body)); /* given back as it went upstream */
    assert_int_equal(flow_unacked(&s->req), 0);
    s->up.ev->sent(&s->up);
    assert_int_equal(s->att, ATT_SENT);
    answer_headers(s);
    assert_int_equal(s->resp_state, RESP_BODY);
    assert_int_equal(down.responds, 1);
    assert_false(down.ended);
    assert_string_equal(down.status, "200");
    s->up.ev->data(&s->up, body, sizeof(body));
    assert_int_equal(flow_unacked(&s->resp), sizeof(body));
    trailers(s, "0");
    assert_int_equal(s->resp_state, RESP_ENDED);
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), sizeof(body));
    assert_true(eof);
    assert_int_equal(up.up_consumed, sizeof(body));
    size_t n;
    nghttp2_nv *t = stream_trailers_nv(s, &n);
    assert_non_null(t);
    assert_int_equal(n, 1);
    s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR);
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(up.detaches, 1);
    assert_false(up.last_reset);
    assert_int_equal(up.released, 1);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
    assert_int_equal(w->n_streams, 0);
    assert_int_equal(up.released, 1); /* once */
    assert_int_equal(down.resets, 0);
}

/* The client cancels in each attempt state: the upstream half is let go
 * (reset only where a stream exists), the pool counts it finished once,
 * and request bytes never taken go back to the connection's window. */
static void cancel_in_every_state(void **state)
{
    static const enum stream_attempt states[] = {ATT_QUEUED, ATT_SUBMITTED, ATT_SENT, ATT_BACKOFF, ATT_DONE};
    for (size_t i = 0; i < GR_ARRAY_LEN(states); i++) {
        reset_fakes(state);
        up.mode = states[i] == ATT_QUEUED ? QUEUE : GRANT;
        struct stream *s = call(states[i] == ATT_BACKOFF ? "/retry.S/M" : "/pkg.S/M", false, NULL);
        const uint8_t body[] = {0, 0, 0, 0, 1, 'x'};
        request_on_data(s, body, sizeof(body));
        if (states[i] == ATT_SENT || states[i] == ATT_BACKOFF)
            s->up.ev->sent(&s->up);
        if (states[i] == ATT_BACKOFF) {
            /* A trailers-only UNAVAILABLE under retry_on: backoff, 1 ms. */
            resp_header(s, ":status", "200");
            resp_header(s, "grpc-status", "14");
            s->up.ev->headers_done(&s->up, true);
        }
        if (states[i] == ATT_DONE) {
            answer_headers(s);
            trailers(s, "0");
            s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR);
        }
        assert_int_equal(s->att, states[i]);
        int detaches = up.detaches;
        stream_on_down_close(s, NGHTTP2_CANCEL);
        assert_int_equal(up.released, up.acquired); /* every acquire let go once */
        if (states[i] == ATT_SUBMITTED || states[i] == ATT_SENT) {
            assert_int_equal(up.detaches, detaches + 1);
            assert_true(up.last_reset);
        } else {
            assert_int_equal(up.detaches, detaches); /* nothing attached to reset */
        }
        /* The client gets its window back, on the stream or at the end. */
        assert_int_equal(down.consumed + down.conn_consumed, sizeof(body));
        assert_int_equal(w->n_streams, 0);
    }
}

/* Each failure kind before the response started is retried on the other
 * endpoint: a connection lost before the request went out and
 * REFUSED_STREAM transparently, UNAVAILABLE under retry_on after a
 * backoff, a per-try timeout; a connection lost after the request went out
 * is not retried without a policy, and the client gets UNAVAILABLE. */
static void retry_after_each_failure_kind(void **state)
{
    struct stream *s = call("/pkg.S/M", true, NULL);
    s->up.ev->lost(&s->up, "upstream 127.0.0.1:7001: connection lost: test", false);
    assert_int_equal(up.submits, 2);
    assert_int_equal(up.last_ep, 1);
    assert_int_equal(s->att, ATT_SUBMITTED);
    s->up.ev->sent(&s->up);
    s->up.ev->closed(&s->up, NGHTTP2_REFUSED_STREAM);
    assert_int_equal(up.submits, 3);
    s->up.ev->sent(&s->up);
    s->up.ev->lost(&s->up, "upstream 127.0.0.1:7001: connection lost: test", false);
    assert_int_equal(up.submits, 3); /* sent, no retry_policy: no retry */
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(down.grpc_status, GRPC_UNAVAILABLE);
    assert_true(down.ended);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
    assert_int_equal(up.released, up.acquired);

    reset_fakes(state);
    s = call("/retry.S/M", true, NULL);
    s->up.ev->sent(&s->up);
    resp_header(s, ":status", "200");
    resp_header(s, "grpc-status", "14");
    s->up.ev->headers_done(&s->up, true);
    assert_int_equal(s->att, ATT_BACKOFF);
    assert_int_equal(down.responds, 0);              /* nothing reached the client */
    on_attempt_timer(w->loop, &s->attempt_timer, 0); /* the backoff ends */
    assert_int_equal(up.submits, 2);
    assert_int_equal(s->att, ATT_SUBMITTED);
    on_attempt_timer(w->loop, &s->attempt_timer, 0); /* the per-try timeout fires */
    assert_true(s->att == ATT_BACKOFF || s->att == ATT_SUBMITTED);
    if (s->att == ATT_BACKOFF)
        on_attempt_timer(w->loop, &s->attempt_timer, 0);
    assert_int_equal(up.submits, 3);
    assert_int_equal(s->retries, 2);
    on_attempt_timer(w->loop, &s->attempt_timer, 0); /* out of retries */
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(down.grpc_status, GRPC_DEADLINE_EXCEEDED);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
    assert_int_equal(up.released, up.acquired);
}

/* A call waits in the pool's line: the pool hands it a slot later and it
 * submits then; or the pool refuses it and the client gets UNAVAILABLE
 * with the pool's reason. A full line fails the call at once. */
static void slot_handed_to_waiting_call(void **state)
{
    up.mode = QUEUE;
    struct stream *s = call("/pkg.S/M", true, NULL);
    assert_int_equal(s->att, ATT_QUEUED);
    assert_int_equal(up.submits, 0);
    s->up.queued = false;
    attach(&s->up);
    s->up.ev->granted(&s->up);
    assert_int_equal(s->att, ATT_SUBMITTED);
    assert_int_equal(up.submits, 1);
    stream_on_down_close(s, NGHTTP2_CANCEL);

    reset_fakes(state);
    up.mode = QUEUE;
    s = call("/pkg.S/M", true, NULL);
    s->up.pool = NULL; /* the pool lets go before it refuses */
    s->up.queued = false;
    s->up.ev->refused(&s->up, "the upstream left the cluster (DNS) before the call got a connection");
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(down.grpc_status, GRPC_UNAVAILABLE);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);

    reset_fakes(state);
    up.mode = LIMIT;
    s = call("/pkg.S/M", true, NULL);
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(down.grpc_status, GRPC_UNAVAILABLE);
    assert_int_equal(up.acquired, 0);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
}

/* No path leaves the client without an answer: when the status cannot be
 * sent, the stream is reset (review F13); a deadline that has passed
 * answers DEADLINE_EXCEEDED and cancels upstream. */
static void failures_always_answer(void **state)
{
    (void)state;
    down.respond_rc = GR_ERR_PROTO;
    struct stream *s = call("/pkg.S/M", true, "bogus"); /* answered here: INTERNAL */
    struct stream *s2 = call("/pkg.S/M", true, NULL);
    s2->up.ev->sent(&s2->up);
    assert_false(stream_fail(s2, GRPC_INTERNAL, "test"));
    assert_int_equal(down.resets, 2); /* the malformed-timeout answer and this one */
    assert_int_equal(s2->resp_state, RESP_ENDED);
    assert_true(up.last_reset);
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
    stream_on_down_close(s2, NGHTTP2_NO_ERROR);

    reset_fakes(state);
    s = call("/pkg.S/M", true, "1m");
    s->up.ev->sent(&s->up);
    on_deadline(w->loop, &s->deadline_timer, 0);
    assert_int_equal(down.grpc_status, GRPC_DEADLINE_EXCEEDED);
    assert_true(up.last_reset);
    assert_int_equal(s->att, ATT_DONE);
    const uint8_t late[] = {1, 2, 3};
    request_on_data(s, late, sizeof(late)); /* nobody takes it: given back at once */
    assert_int_equal(down.consumed, sizeof(late));
    stream_on_down_close(s, NGHTTP2_NO_ERROR);
    assert_int_equal(up.released, up.acquired);
}

/* A response the client does not take, from a backend that has finished:
 * the stream_write_timeout clock starts when bytes wait, restarts when the
 * client takes some, and at its end the call is reset, its upstream
 * stream let go and its buffers freed (review F3). */
static void unread_answer_is_cut_after_stream_write_timeout(void **state)
{
    (void)state;
    struct stream *s = call("/pkg.S/M", true, NULL);
    s->up.ev->sent(&s->up);
    answer_headers(s);
    uint8_t body[3000];
    memset(body, 'b', sizeof(body));
    s->up.ev->data(&s->up, body, sizeof(body));
    ev_tstamp t0 = s->write_wait;
    assert_true(t0 > 0);
    assert_int_equal(client.held, sizeof(body));
    trailers(s, "0");
    s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR); /* the backend finished */
    assert_int_equal(s->att, ATT_DONE);
    assert_int_equal(client.held, sizeof(body)); /* still held here */
    double after = (double)client.cfg->stream_write_timeout_ms / 1000.0;
    stream_write_timeouts(&client, t0 + after / 2);
    assert_int_equal(down.resets, 0);
    uint8_t out[1000];
    bool eof;
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), sizeof(out)); /* the client takes some */
    ev_tstamp t1 = s->write_wait;
    assert_true(t1 >= t0);
    stream_write_timeouts(&client, t1 + after / 2); /* restarted: not yet */
    assert_int_equal(down.resets, 0);
    stream_write_timeouts(&client, t1 + after);
    assert_int_equal(down.resets, 1);
    assert_int_equal(s->resp.q.len, 0);
    assert_int_equal(client.held, 0);
    assert_int_equal(s->write_wait, 0);
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), 0); /* nothing more goes out */
    assert_false(eof);
    stream_on_down_close(s, NGHTTP2_CANCEL);
    assert_int_equal(w->n_streams, 0);
    assert_int_equal(up.released, up.acquired);
}

/* The same for a complete answer whose end alone waits (an empty body
 * behind a window of 0), and through the call's deadline. */
static void deadline_frees_a_complete_answer_not_taken(void **state)
{
    (void)state;
    struct stream *s = call("/pkg.S/M", true, "1S");
    s->up.ev->sent(&s->up);
    answer_headers(s);
    trailers(s, "0");
    s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR);
    assert_true(s->write_wait > 0); /* the end waits */
    on_deadline(w->loop, &s->deadline_timer, 0);
    assert_int_equal(down.resets, 1);
    assert_int_equal(s->write_wait, 0);
    stream_on_down_close(s, NGHTTP2_CANCEL);
}

/* Request bytes sent upstream are kept for a replay only while a retry is
 * possible, and only within the connection's connection_buffer (F8). */
static void replay_copies_are_bounded(void **state)
{
    (void)state;
    static struct gr_listener_cfg small;
    small = cfg->listeners[0];
    small.connection_buffer = 64 * 1024;
    client.cfg = &small;
    uint8_t chunk[16 * 1024], out[16 * 1024];
    memset(chunk, 'r', sizeof(chunk));
    bool eof;
    struct stream *a = call("/pkg.S/M", false, NULL); /* no retry_policy: transparent retries only */
    struct stream *b = call("/pkg.S/M", false, NULL);
    for (int i = 0; i < 3; i++) {
        request_on_data(a, chunk, sizeof(chunk));
        assert_int_equal(a->up.ev->pull(&a->up, out, sizeof(out), &eof), sizeof(chunk));
    }
    assert_true(a->req.replay);
    assert_int_equal(a->req.acked, 3 * sizeof(chunk)); /* kept: a REFUSED_STREAM could still come */
    assert_int_equal(client.held, 3 * sizeof(chunk));
    for (int i = 0; i < 2; i++) {
        request_on_data(b, chunk, sizeof(chunk));
        assert_int_equal(b->up.ev->pull(&b->up, out, sizeof(out), &eof), sizeof(chunk));
    }
    assert_false(b->req.replay); /* past connection_buffer: b commits to this attempt */
    assert_int_equal(b->req.acked, 0);
    assert_int_equal(client.held, 3 * sizeof(chunk));
    a->transparent_retries = 2; /* no retry left: nothing is worth keeping */
    request_on_data(a, chunk, sizeof(chunk));
    assert_int_equal(a->up.ev->pull(&a->up, out, sizeof(out), &eof), sizeof(chunk));
    assert_false(a->req.replay);
    assert_int_equal(client.held, 0);
    assert_int_equal(down.consumed, 6 * sizeof(chunk)); /* every byte's credit went back */
    stream_on_down_close(a, NGHTTP2_CANCEL);
    stream_on_down_close(b, NGHTTP2_CANCEL);
    assert_int_equal(w->n_streams, 0);
}

/* A connection whose calls hold more than connection_buffer gets no new
 * call: REFUSED_STREAM, nothing sent upstream. */
static void over_budget_new_streams_are_refused(void **state)
{
    (void)state;
    client.held = client.cfg->connection_buffer + 1;
    struct stream *s = call("/pkg.S/M", true, NULL);
    assert_int_equal(down.resets, 1);
    assert_int_equal(up.submits, 0);
    assert_int_equal(s->att, ATT_DONE);
    stream_on_down_close(s, NGHTTP2_REFUSED_STREAM);
    client.held = 0;
}

/* A response's upstream window starts at 32 KiB and doubles once the
 * client took a whole window, up to the cluster's stream_buffer. */
static void response_window_grows_while_read(void **state)
{
    (void)state;
    static uint8_t chunk[32 * 1024], out[64 * 1024];
    bool eof;
    struct stream *s = call("/pkg.S/M", true, NULL);
    answer_headers(s);
    assert_int_equal(s->resp.window, 32 * 1024);
    s->up.ev->data(&s->up, chunk, 16 * 1024);
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), 16 * 1024);
    assert_int_equal(up.up_window, 0); /* half a window taken: it stays */
    s->up.ev->data(&s->up, chunk, 16 * 1024);
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), 16 * 1024);
    assert_int_equal(up.up_window, 64 * 1024);
    s->up.ev->data(&s->up, chunk, sizeof(chunk));
    s->up.ev->data(&s->up, chunk, sizeof(chunk));
    assert_int_equal(stream_pull_resp(s, out, sizeof(out), &eof), 64 * 1024);
    assert_int_equal(s->resp.window, 64 * 1024); /* the cluster's stream_buffer: no further */
    assert_int_equal(up.up_consumed, 96 * 1024);
    assert_int_equal(client.resp_windows, 64 * 1024);
    stream_on_down_close(s, NGHTTP2_CANCEL);
    assert_int_equal(client.resp_windows, 0);
}

/* Past connection_buffer, response credit waits (and no window grows);
 * when the connection's held bytes come back under it, every call gets
 * its credit. */
static void over_budget_response_credit_waits(void **state)
{
    (void)state;
    static struct gr_listener_cfg small;
    small = cfg->listeners[0];
    small.connection_buffer = 40000;
    client.cfg = &small;
    static uint8_t chunk[32 * 1024], out[32 * 1024];
    bool eof;
    struct stream *a = call("/pkg.S/M", true, NULL);
    struct stream *b = call("/pkg.S/M", true, NULL);
    answer_headers(a);
    answer_headers(b);
    b->up.ev->data(&b->up, chunk, sizeof(chunk)); /* b's client does not read */
    a->up.ev->data(&a->up, chunk, 16 * 1024);
    assert_int_equal(client.held, 48 * 1024);
    assert_int_equal(stream_pull_resp(a, out, 8 * 1024, &eof), 8 * 1024);
    assert_int_equal(client.held, 40 * 1024); /* still over 40000 */
    assert_int_equal(up.up_consumed, 0);      /* withheld */
    assert_int_equal(stream_pull_resp(a, out, 8 * 1024, &eof), 8 * 1024);
    assert_int_equal(client.held, 32 * 1024);
    assert_int_equal(up.up_consumed, 16 * 1024); /* under again: all of a's credit */
    assert_int_equal(up.up_window, 0);           /* two 32 KiB windows: no room to grow a's */
    assert_int_equal(flow_unacked(&a->resp), 0);
    stream_on_down_close(a, NGHTTP2_CANCEL);
    stream_on_down_close(b, NGHTTP2_CANCEL);
    assert_int_equal(client.held, 0);
}

/* What each attempt's end tells the pool for outlier ejection
 * (stream_obs_detach): the backend's grpc-status whether trailers-only or
 * in trailers after DATA, OUTLIER_RESET for a reset or a lost connection,
 * a non-gRPC HTTP error's mapped status, and OUTLIER_NOTHING when grelay
 * ended the attempt itself (client cancel, deadline, per-try timeout). */
static void outcomes_for_outlier_ejection(void **state)
{
    static const uint8_t msg[] = {0, 0, 0, 0, 1, 'x'};
    struct {
        const char *path;
        int kind;
        int want;
    } cases[] = {
        {"/pkg.S/M", 0, GRPC_OK},         {"/pkg.S/M", 1, GRPC_UNAVAILABLE},  {"/pkg.S/M", 2, GRPC_UNAVAILABLE},
        {"/pkg.S/M", 3, OUTLIER_RESET},   {"/pkg.S/M", 4, OUTLIER_RESET},     {"/pkg.S/M", 5, OUTLIER_NOTHING},
        {"/pkg.S/M", 6, OUTLIER_NOTHING}, {"/retry.S/M", 7, OUTLIER_NOTHING}, {"/pkg.S/M", 8, GRPC_UNAVAILABLE},
        {"/pkg.S/M", 9, GRPC_DATA_LOSS},
    };
    for (size_t i = 0; i < GR_ARRAY_LEN(cases); i++) {
        reset_fakes(state);
        n_outcomes = 0;
        struct stream *s = call(cases[i].path, true, "1m");
        s->up.ev->sent(&s->up);
        switch (cases[i].kind) {
        case 0: /* OK in trailers after a message */
        case 1: /* UNAVAILABLE in trailers after a message (envoy#8228) */
        case 9:
            answer_headers(s);
            s->up.ev->data(&s->up, msg, sizeof(msg));
            trailers(s, cases[i].kind == 0 ? "0" : cases[i].kind == 1 ? "14" : "15");
            s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR);
            break;
        case 2: /* trailers-only UNAVAILABLE */
            resp_header(s, ":status", "200");
            resp_header(s, "grpc-status", "14");
            s->up.ev->headers_done(&s->up, true);
            s->up.ev->closed(&s->up, NGHTTP2_NO_ERROR);
            break;
        case 3: /* the backend resets the stream after its headers */
            answer_headers(s);
            s->up.ev->closed(&s->up, NGHTTP2_INTERNAL_ERROR);
            break;
        case 4: /* the connection is lost */
            s->up.ev->lost(&s->up, "upstream 127.0.0.1:7001: connection lost: test", false);
            break;
        case 5: /* the client cancels */ answer_headers(s); break;
        case 6: /* grelay's deadline */ on_deadline(w->loop, &s->deadline_timer, 0); break;
        case 7: /* the per-try timeout (retried: that attempt says nothing either) */
            on_attempt_timer(w->loop, &s->attempt_timer, 0);
            break;
        case 8: /* an HTTP 503 from something that is not gRPC */
            resp_header(s, ":status", "503");
            resp_header(s, "content-type", "text/html");
            s->up.ev->headers_done(&s->up, false);
            break;
        }
        stream_on_down_close(s, NGHTTP2_CANCEL);
        assert_int_equal(up.released, up.acquired);
        assert_true(n_outcomes >= 1);
        if (outcomes[0] != cases[i].want)
            print_error("case %zu: outcome %d, want %d\n", i, outcomes[0], cases[i].want);
        assert_int_equal(outcomes[0], cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(unary_call_succeeds, reset_fakes),
        cmocka_unit_test_setup(cancel_in_every_state, reset_fakes),
        cmocka_unit_test_setup(retry_after_each_failure_kind, reset_fakes),
        cmocka_unit_test_setup(slot_handed_to_waiting_call, reset_fakes),
        cmocka_unit_test_setup(failures_always_answer, reset_fakes),
        cmocka_unit_test_setup(unread_answer_is_cut_after_stream_write_timeout, reset_fakes),
        cmocka_unit_test_setup(deadline_frees_a_complete_answer_not_taken, reset_fakes),
        cmocka_unit_test_setup(replay_copies_are_bounded, reset_fakes),
        cmocka_unit_test_setup(over_budget_new_streams_are_refused, reset_fakes),
        cmocka_unit_test_setup(response_window_grows_while_read, reset_fakes),
        cmocka_unit_test_setup(over_budget_response_credit_waits, reset_fakes),
        cmocka_unit_test_setup(outcomes_for_outlier_ejection, reset_fakes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
