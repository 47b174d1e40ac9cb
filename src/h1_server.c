/* HTTP/1.1 front end for gRPC-Web. http-parser reads requests; responses are
 * written with chunked framing (the body's length is not known up front).
 * One request at a time: bytes that arrive before the response ends wait in
 * pending_in (browsers do not pipeline, but nothing is lost if one does). */
#include "grelay/h1_server.h"
#include "grelay/downstream.h"
#include "grelay/grpcweb.h"
#include "grelay/h1_strict.h"
#include "grelay/log.h"
#include "grelay/stats.h"
#include "grelay/request.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Bytes of a next request we hold while the current response is written. */
#define MAX_PENDING_IN (64 * 1024)
/* Bytes of a request's Connection header values (the names it lists). */
#define MAX_CONNECTION_LIST 1024

struct h1conn {
    struct downstream base;      /* transport, listener, streams; first member */
    http_parser parser;          /* http-parser's state for this connection's requests */
    struct stream *s;            /* the request in progress, or NULL */
    int32_t next_id;             /* request number on this connection, for logs */
    char *url;                   /* request target, accumulated */
    size_t url_len, url_cap;     /* bytes of url used, and allocated */
    char *field;                 /* header name being read */
    size_t field_len, field_cap; /* bytes of field used, and allocated */
    char *value;                 /* header value being read */
    size_t value_len, value_cap; /* bytes of value used, and allocated */
    bool in_value;               /* the parser is inside a header value */
    struct buf out;              /* response head waiting for the socket */
    struct buf pending_in;       /* bytes read past the current request */
    bool msg_complete;           /* the request was read to its end */
    bool streaming;              /* response headers sent, body being pulled */
    bool resp_done;              /* the response is complete */
    bool body_paused;            /* reading stopped: the body waits for the upstream */
    bool close_after;            /* close once the response is written */
    bool answered;               /* grelay answered the request itself (an error): ignore the parser's */
    bool expect_continue;        /* the request said Expect: 100-continue */
    bool expect_other;           /* the request had an Expect other than 100-continue */
    bool conn_too_long;          /* its Connection values passed MAX_CONNECTION_LIST */
    struct h1_strict scan;       /* the strict framing check of the request being read */
    char *conn_list;             /* the request's Connection values, comma-joined */
    size_t conn_len, conn_cap;   /* bytes of conn_list used, and allocated */
    bool aged;                   /* past max_connection_age: draining, CONN_TIMER_AGE now ends its grace */
};

static inline struct h1conn *h1_of(struct conn *c) { return container_of(c, struct h1conn, base.io); }
static inline struct h1conn *h1_from(struct downstream *d) { return container_of(d, struct h1conn, base); }

static int append(char **p, size_t *len, size_t *cap, const char *at, size_t n, size_t max)
{
    if (*len + n > max)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t ncap = (*len + n + 1) * 2;
        char *np = realloc(*p, ncap);
        if (np == NULL)
            return -1;
        *p = np;
        *cap = ncap;
    }
    memcpy(*p + *len, at, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

/* A response grelay writes itself when the request cannot become a stream. */
static void write_error(struct h1conn *h, int status, const char *text)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %zu\r\n"
                     "connection: close\r\n\r\n",
                     status, reason(status), strlen(text));
    if (buf_append(&h->out, &h->base.io.w->chunks, (const uint8_t *)head, (size_t)n) != GR_OK ||
        buf_append(&h->out, &h->base.io.w->chunks, (const uint8_t *)text, strlen(text)) != GR_OK)
        h->base.broken = true; /* out of memory: the close is the answer */
    h->resp_done = true;
    h->close_after = true;
    conn_want_flush(&h->base.io);
}

/* A request grelay refuses before it became a call: the answer, then the
 * close (a half-read request cannot go on). */
static void reject(struct h1conn *h, int status, const char *why)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "%s HTTP/1.1 request: %s\n", status == 417 ? "refused" : "malformed", why);
    log_debug("HTTP/1.1 client: %d %s", status, why);
    write_error(h, status, msg);
    h->answered = true;
    h->base.broken = h->s != NULL;
}

static bool lit_is(const char *p, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(p, lit, len) == 0;
}

/* Fields the front end handles itself: Expect is answered here, and the
 * names Connection lists are remembered (dropped once all fields are in).
 * False when the field is not forwarded. */
static bool own_field(struct h1conn *h)
{
    const char *v = h->value ? h->value : "";
    if (lit_is(h->field, h->field_len, "expect")) {
        if (lit_is(v, h->value_len, "100-continue"))
            h->expect_continue = true;
        else
            h->expect_other = true;
        return false;
    }
    if (lit_is(h->field, h->field_len, "connection")) {
        if ((h->conn_len > 0 && append(&h->conn_list, &h->conn_len, &h->conn_cap, ",", 1, MAX_CONNECTION_LIST)) ||
            append(&h->conn_list, &h->conn_len, &h->conn_cap, v, h->value_len, MAX_CONNECTION_LIST))
            h->conn_too_long = true;
    }
    return true;
}

static int emit_header(struct h1conn *h)
{
    if (h->field_len == 0 || h->s == NULL)
        return 0;
    for (size_t i = 0; i < h->field_len; i++)
        h->field[i] = (char)tolower((unsigned char)h->field[i]);
    /* http-parser keeps trailing blanks; they are not part of the value. */
    while (h->value_len > 0 && (h->value[h->value_len - 1] == ' ' || h->value[h->value_len - 1] == '\t'))
        h->value[--h->value_len] = '\0';
    int rc = GR_OK;
    if (own_field(h))
        rc = request_on_header(h->s, (const uint8_t *)h->field, h->field_len,
                               (const uint8_t *)(h->value ? h->value : ""), h->value_len);
    h->field_len = h->value_len = 0;
    h->in_value = false;
    return rc == GR_ERR_NOMEM ? -1 : 0; /* past a limit: the call is answered once the head is read */
}

/* ---- The connection's deadlines (c->timer). HEADER: from accept until the
 * first request's headers are complete, and for each later request from
 * its first byte (the wait for that byte is IDLE's: HAProxy's timeout
 * http-request and http-keep-alive). IDLE: idle_timeout while no request
 * is in progress, from accept and from the end of each response. ---- */

/* The first byte of a request: it is in flight, and its headers are timed. */
static void request_begins(struct h1conn *h)
{
    struct conn_timer *t = &h->base.io.timer;
    conn_timer_clear(t, CONN_TIMER_IDLE);
    uint64_t rht = h->base.cfg->request_headers_timeout_ms;
    if (rht > 0 && t->at[CONN_TIMER_HEADER] == 0) /* the first request's runs from accept */
        conn_timer_set(t, CONN_TIMER_HEADER, (ev_tstamp)rht / 1e3);
}

/* downstream_ops.drain: `Connection: close` on the response (the one in
 * progress if its head is not out yet, else the next); an idle connection
 * closes now. cut: the call in progress ends with it (in its trailer frame,
 * or trailers-only), and the connection closes once that is written. */
static size_t h1_drain(struct downstream *d, const char *cut)
{
    struct h1conn *h = h1_from(d);
    if (!h->close_after)
        stats_add(stats_block(d->io.w->stats, d->cfg->stats), L_DRAINED_CONNS, 1);
    h->close_after = true;
    if (h->s == NULL && h->out.len == 0) {
        conn_close(&d->io, GR_OK, "draining: idle");
        return 0;
    }
    conn_want_flush(&d->io);
    return cut != NULL ? stream_cut_all(d, cut) : 0;
}

static void h1_on_deadline(struct conn *c, enum conn_timer_kind kind)
{
    struct h1conn *h = h1_of(c);
    if (kind == CONN_TIMER_AGE) { /* max_connection_age: the drain; then its grace is over: the cut */
        bool first = !h->aged;
        h->aged = true;
        (void)h1_drain(&h->base, first ? NULL : "grelay closed the connection at max_connection_age");
        if (first && c->state != CONN_CLOSED)
            conn_timer_set(&c->timer, CONN_TIMER_AGE, (ev_tstamp)h->base.cfg->max_connection_age_grace_ms / 1e3);
        return;
    }
    if (kind == CONN_TIMER_IDLE && h->s == NULL) {
        stats_limit_hit(c->w->stats, h->base.cfg, LIMIT_IDLE_TIMEOUT);
        conn_close(c, GR_OK, "idle_timeout");
    } else if (kind == CONN_TIMER_HEADER) {
        stats_limit_hit(c->w->stats, h->base.cfg, LIMIT_HEADERS_TIMEOUT);
        if (h->s == NULL) {
            /* Not a byte of a request: close without a word, as HAProxy does
             * with http-ignore-probes (a 408 on a connection a browser
             * opened ahead would be read as the answer to its next request). */
            conn_close(c, GR_ERR_IO, "no request within request_headers_timeout");
            return;
        }
        /* A request has begun but its headers trickle: 408 and close, as
         * HAProxy's timeout http-request does. */
        log_debug("HTTP/1.1 client: request headers not complete within request_headers_timeout");
        write_error(h, 408, "request headers not complete in time\n");
        h->base.broken = true;
    } else if (kind == CONN_TIMER_WRITE) {
        /* A response the client has not taken for stream_write_timeout ends
         * the connection (HTTP/1.1 cannot reset one response), at once: its
         * socket may be the one not read. */
        stream_write_timeouts(&h->base, ev_now(c->w->loop));
        if (h->base.broken)
            conn_close(c, GR_ERR_IO, "the client took none of the response for stream_write_timeout");
    }
}

static int on_message_begin(http_parser *p)
{
    struct h1conn *h = p->data;
    h->url_len = h->field_len = h->value_len = 0;
    h->in_value = false;
    h->msg_complete = h->streaming = h->resp_done = false;
    h->expect_continue = h->expect_other = h->conn_too_long = false;
    h->conn_len = 0;
    request_begins(h);
    h->s = stream_new(&h->base, ++h->next_id);
    if (h->s == NULL)
        return -1;
    downstream_call_began(&h->base);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct h1conn *h = p->data;
    return append(&h->url, &h->url_len, &h->url_cap, at, len, 16 * 1024);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct h1conn *h = p->data;
    if (h->in_value && emit_header(h) != 0)
        return -1;
    return append(&h->field, &h->field_len, &h->field_cap, at, len, 16 * 1024);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct h1conn *h = p->data;
    h->in_value = true;
    return append(&h->value, &h->value_len, &h->value_cap, at, len, 64 * 1024);
}

static int on_headers_complete(http_parser *p)
{
    struct h1conn *h = p->data;
    if (emit_header(h) != 0)
        return -1;
    const char *method = http_method_str((enum http_method)p->method);
    if (request_on_header(h->s, (const uint8_t *)":method", 7, (const uint8_t *)method, strlen(method)) ==
            GR_ERR_NOMEM ||
        request_on_header(h->s, (const uint8_t *)":path", 5, (const uint8_t *)h->url, h->url_len) == GR_ERR_NOMEM)
        return -1;
    if (!http_should_keep_alive(p))
        h->close_after = true;
    conn_timer_clear(&h->base.io.timer, CONN_TIMER_HEADER);
    if (h->expect_other && p->http_minor == 1) {
        reject(h, 417, "an Expect other than 100-continue");
        return -1; /* the parser stops here; feed sees the answer */
    }
    if (h->conn_too_long) {
        reject(h, 400, "Connection header values longer than 1 KiB");
        return -1;
    }
    if (h->conn_len > 0)
        headers_drop_listed(&h->s->req_hdrs, (const uint8_t *)h->conn_list, h->conn_len);
    request_on_headers_done(h->s);
    /* 100 Continue only for a call that goes on (not answered here) and
     * has a body to wait for; an HTTP/1.0 client's expectation is ignored. */
    if (h->expect_continue && p->http_minor == 1 && !h->resp_done && !h->streaming && h->out.len == 0 &&
        ((p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != UINT64_MAX))) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (buf_append(&h->out, &h->base.io.w->chunks, (const uint8_t *)cont, sizeof(cont) - 1) != GR_OK)
            h->base.broken = true;
        conn_want_flush(&h->base.io);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct h1conn *h = p->data;
    request_on_data(h->s, (const uint8_t *)at, len);
    if (stream_req_unacked(h->s) >= h->base.cfg->stream_buffer && !h->body_paused) {
        /* The upstream is slower: stop reading until it catches up. */
        h->body_paused = true;
        conn_pause_read(&h->base.io);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h1conn *h = p->data;
    h->msg_complete = true;
    h1_strict_init(&h->scan); /* the next request is checked from its first byte */
    stream_on_req_end(h->s);
    http_parser_pause(p, 1); /* the next request waits for this response */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Bytes read past the current request: they wait for its response. */
static int hold(struct h1conn *h, const uint8_t *data, size_t len)
{
    if (len == 0)
        return GR_OK;
    if (h->pending_in.len + len > MAX_PENDING_IN)
        return GR_ERR_LIMIT;
    return buf_append(&h->pending_in, &h->base.io.w->chunks, data, len);
}

/* Feeds bytes to the parser, after the strict framing check (http-parser
 * alone is lenient, see h1_strict.h); what comes after a complete request
 * waits. */
static int feed(struct h1conn *h, const uint8_t *data, size_t len)
{
    if (h->msg_complete)
        return hold(h, data, len);
    size_t ok;
    int bad = h1_strict_scan(&h->scan, data, len, &ok);
    if (bad != 0 && (h->s == NULL || !stream_resp_started(h->s))) {
        reject(h, bad, h->scan.why);
        return GR_OK;
    }
    if (bad != 0) {
        log_debug("HTTP/1.1 client: %s", h->scan.why);
        return GR_ERR_PROTO; /* the answer is under way: only the close is left */
    }
    size_t done = http_parser_execute(&h->parser, &parser_settings, (const char *)data, ok);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (h->answered)
        return GR_OK;
    if (e == HPE_PAUSED)
        return hold(h, data + done, len - done);
    if (e == HPE_OK && h1_strict_done(&h->scan) && !h->msg_complete) {
        /* Cannot happen if both read the request alike; if not, refuse it. */
        reject(h, 400, "request framing not understood");
        return GR_OK;
    }
    if (e != HPE_OK) {
        log_debug("HTTP/1.1 client: %s", http_errno_description(e));
        if (h->s == NULL || !stream_resp_started(h->s)) {
            char msg[160];
            snprintf(msg, sizeof(msg), "malformed HTTP/1.1 request: %s\n", http_errno_description(e));
            write_error(h, e == HPE_HEADER_OVERFLOW ? 431 : 400, msg);
            h->base.broken = h->s != NULL; /* a half-read request cannot go on */
            return GR_OK;
        }
        return GR_ERR_PROTO;
    }
    return GR_OK;
}

static int h1_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct h1conn *h = h1_of(c);
    if (h->close_after && h->resp_done)
        return GR_OK; /* we are closing: ignore what else comes */
    return feed(h, data, len);
}

/* The response went out in full: free the call, go on to the next request. */
static void finish_request(struct h1conn *h)
{
    struct chunk_pool *pool = &h->base.io.w->chunks;
    if (!h->msg_complete)
        h->close_after = true; /* the rest of its body would have to be read first */
    if (h->s != NULL) {
        struct stream *s = h->s;
        h->s = NULL;
        stream_on_down_close(s, NGHTTP2_NO_ERROR);
    }
    if (h->close_after)
        return;
    if (h->base.cfg->idle_timeout_ms > 0)
        conn_timer_set(&h->base.io.timer, CONN_TIMER_IDLE, (ev_tstamp)h->base.cfg->idle_timeout_ms / 1e3);
    h->resp_done = false;
    h->msg_complete = false;
    http_parser_pause(&h->parser, 0);
    if (h->pending_in.len > 0) {
        uint8_t *tmp = malloc(h->pending_in.len);
        if (tmp == NULL) {
            h->base.broken = true;
            return;
        }
        size_t n = buf_read(&h->pending_in, pool, tmp, h->pending_in.len);
        if (feed(h, tmp, n) != GR_OK)
            h->base.broken = true;
        free(tmp);
    }
}

static ssize_t h1_pull(struct conn *c, const uint8_t **data)
{
    struct h1conn *h = h1_of(c);
    struct worker *w = c->w;
    if (h->base.broken && h->out.len == 0)
        return 0;
    if (h->out.len > 0) {
        size_t n = buf_read(&h->out, &w->chunks, w->outbuf, sizeof(w->outbuf));
        *data = w->outbuf;
        return (ssize_t)n;
    }
    if (h->streaming && h->s != NULL) {
        /* One chunk: "<hex>\r\n" + body + "\r\n", and "0\r\n\r\n" at the end. */
        const size_t head = 12;
        bool eof;
        size_t n = stream_pull_resp(h->s, w->outbuf + head, CHUNK_SIZE, &eof);
        size_t start = head, end = head;
        if (n > 0) {
            char hex[16];
            int hl = snprintf(hex, sizeof(hex), "%zx\r\n", n);
            start = head - (size_t)hl;
            memcpy(w->outbuf + start, hex, (size_t)hl);
            end = head + n;
            w->outbuf[end++] = '\r';
            w->outbuf[end++] = '\n';
        }
        if (eof) {
            memcpy(w->outbuf + end, "0\r\n\r\n", 5);
            end += 5;
            h->streaming = false;
            h->resp_done = true;
        }
        *data = w->outbuf + start;
        return (ssize_t)(end - start);
    }
    if (h->resp_done && h->s != NULL) {
        finish_request(h);
        if (h->out.len > 0 || h->streaming)
            return h1_pull(c, data);
    }
    return 0;
}

static bool h1_done(struct conn *c)
{
    struct h1conn *h = h1_of(c);
    return h->base.broken || (h->close_after && h->resp_done && h->out.len == 0 && !h->streaming);
}

static void h1_on_close(struct conn *c, int err, const char *why)
{
    struct h1conn *h = h1_of(c);
    if (err != GR_OK && err != GR_ERR_CLOSED)
        log_debug("HTTP/1.1 client connection closed: %s", why);
    h->s = NULL;
    downstream_fini(&h->base);
    stream_close_all(&h->base);
    buf_clear(&h->out, &c->w->chunks);
    buf_clear(&h->pending_in, &c->w->chunks);
}

static void h1_destroy(struct conn *c)
{
    struct h1conn *h = h1_of(c);
    worker_conn_release(c->w, h->base.cfg);
    free(h->url);
    free(h->field);
    free(h->value);
    free(h->conn_list);
    free(h);
}

static const struct conn_ops h1_conn_ops = {
    .on_read = h1_on_read,
    .pull = h1_pull,
    .done = h1_done,
    .on_close = h1_on_close,
    .destroy = h1_destroy,
    .on_deadline = h1_on_deadline,
};

static bool is_status_field(const nghttp2_nv *nv)
{
    return (nv->namelen == 11 && memcmp(nv->name, "grpc-status", 11) == 0) ||
           (nv->namelen == 12 && memcmp(nv->name, "grpc-message", 12) == 0);
}

/* The response's fields, each checked by grelay itself (review F16: CR,
 * LF or NUL would split the response; nghttp2 refuses them upstream today,
 * but nothing else here would). A bad field is dropped; a bad grpc-status
 * or grpc-message (a trailers-only answer) turns the call's status into
 * INTERNAL, since a status cannot be half dropped. */
static int write_fields(struct h1conn *h, const nghttp2_nv *nva, size_t n)
{
    struct chunk_pool *pool = &h->base.io.w->chunks;
    bool status_bad = false;
    for (size_t i = 0; i < n; i++)
        if (nva[i].namelen > 0 && nva[i].name[0] != ':' && is_status_field(&nva[i]) &&
            !grpcweb_field_ok(nva[i].name, nva[i].namelen, nva[i].value, nva[i].valuelen))
            status_bad = true;
    int rc = GR_OK;
    for (size_t i = 0; i < n && rc == GR_OK; i++) {
        if (nva[i].namelen == 0 || nva[i].name[0] == ':' || (status_bad && is_status_field(&nva[i])))
            continue;
        if (!grpcweb_field_ok(nva[i].name, nva[i].namelen, nva[i].value, nva[i].valuelen)) {
            log_warn("response header '%.*s' dropped: CR, LF, NUL or another invalid byte", (int)nva[i].namelen,
                     (const char *)nva[i].name);
            continue;
        }
        rc |= buf_append(&h->out, pool, nva[i].name, nva[i].namelen);
        rc |= buf_append(&h->out, pool, (const uint8_t *)": ", 2);
        rc |= buf_append(&h->out, pool, nva[i].value, nva[i].valuelen);
        rc |= buf_append(&h->out, pool, (const uint8_t *)"\r\n", 2);
    }
    if (status_bad) {
        static const char st[] = "grpc-status: 13\r\ngrpc-message: " GRPCWEB_INVALID_VALUE "\r\n";
        log_warn("upstream sent an invalid grpc-status or grpc-message: the call fails with INTERNAL");
        rc |= buf_append(&h->out, pool, (const uint8_t *)st, sizeof(st) - 1);
    }
    return rc;
}

static int h1_respond(struct downstream *d, struct stream *s, const nghttp2_nv *nva, size_t n, bool end_stream)
{
    struct h1conn *h = h1_from(d);
    struct chunk_pool *pool = &d->io.w->chunks;
    (void)s;
    int status = 200;
    char line[64];
    for (size_t i = 0; i < n; i++)
        if (nva[i].namelen == 7 && memcmp(nva[i].name, ":status", 7) == 0)
            status = atoi((const char *)nva[i].value);
    if (status < 200 || status > 999)
        status = 502; /* 1xx are not forwarded; anything else is no status */
    int ll = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, reason(status));
    int rc = buf_append(&h->out, pool, (const uint8_t *)line, (size_t)ll);
    if (rc == GR_OK)
        rc = write_fields(h, nva, n);
    const char *framing = end_stream ? "content-length: 0\r\n" : "transfer-encoding: chunked\r\n";
    rc |= buf_append(&h->out, pool, (const uint8_t *)framing, strlen(framing));
    if (h->close_after)
        rc |= buf_append(&h->out, pool, (const uint8_t *)"connection: close\r\n", 19);
    rc |= buf_append(&h->out, pool, (const uint8_t *)"\r\n", 2);
    if (end_stream)
        h->resp_done = true;
    else
        h->streaming = true;
    conn_want_flush(&d->io);
    return rc == GR_OK ? GR_OK : GR_ERR_NOMEM;
}

static void h1_resume(struct downstream *d, struct stream *s)
{
    (void)s;
    conn_want_flush(&d->io);
}

static void h1_consume(struct downstream *d, struct stream *s, size_t n)
{
    struct h1conn *h = h1_from(d);
    (void)n;
    /* The stream counts what it holds; a stream that is gone holds nothing. */
    uint64_t unacked = s != NULL ? stream_req_unacked(s) : 0;
    if (h->body_paused && unacked < d->cfg->stream_buffer / 2) {
        h->body_paused = false;
        conn_resume_read(&d->io);
    }
}

static void h1_reset(struct downstream *d, struct stream *s, uint32_t code)
{
    (void)s;
    (void)code;
    /* HTTP/1.1 cannot abort one response and keep the connection: close it
     * (from the flush, never under the caller's feet). */
    downstream_break(d);
}

static const struct downstream_ops h1_downstream_ops = {
    .respond = h1_respond,
    .resume = h1_resume,
    .consume = h1_consume,
    .reset = h1_reset,
    .drain = h1_drain,
};

void h1_server_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl, const uint8_t *early,
                      size_t early_len, ev_tstamp accepted)
{
    struct h1conn *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        SSL_free(ssl);
        close(fd);
        worker_conn_release(w, l);
        return;
    }
    http_parser_init(&h->parser, HTTP_REQUEST);
    h1_strict_init(&h->scan);
    h->parser.data = h;
    buf_init(&h->out);
    buf_init(&h->pending_in);
    downstream_init(&h->base, w, l, &h1_downstream_ops, true);
    conn_init_accepted(&h->base.io, w, fd, &h1_conn_ops);
    if (l->request_headers_timeout_ms > 0)
        conn_timer_set_at(&h->base.io.timer, CONN_TIMER_HEADER,
                          (accepted > 0 ? accepted : ev_now(w->loop)) + (ev_tstamp)l->request_headers_timeout_ms / 1e3);
    if (l->idle_timeout_ms > 0)
        conn_timer_set(&h->base.io.timer, CONN_TIMER_IDLE, (ev_tstamp)l->idle_timeout_ms / 1e3);
    if (l->max_connection_age_ms > 0) { /* ±10%, as HTTP/2's */
        double jitter = 0.9 + 0.2 * (double)(gr_rand(&w->rng) % 1001) / 1000.0;
        conn_timer_set(&h->base.io.timer, CONN_TIMER_AGE, (ev_tstamp)l->max_connection_age_ms / 1e3 * jitter);
    }
    if (ssl != NULL)
        conn_adopt_tls(&h->base.io, ssl);
    if (early_len > 0 && h1_on_read(&h->base.io, early, early_len) != GR_OK) {
        conn_close(&h->base.io, GR_ERR_PROTO, "bad HTTP/1.1 request");
        return;
    }
    conn_want_flush(&h->base.io);
}
