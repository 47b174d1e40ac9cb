/* The reference for grelay's request checks (see h2_ref.h). */
#include "h2_ref.h"

#include "grelay/h2_check.h"

#include <nghttp2/nghttp2.h>
#include <string.h>

struct wire {
    uint8_t b[96 * 1024];
    size_t n;
    bool over; /* the request did not fit: not sent */
};

static void put(struct wire *w, const void *p, size_t n)
{
    if (w->over || w->n + n > sizeof(w->b)) {
        w->over = true;
        return;
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void frame_head(struct wire *w, size_t len, uint8_t type, uint8_t flags, uint32_t id)
{
    uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
                    (uint8_t)(id >> 24),  (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    put(w, h, sizeof(h));
}

/* An HPACK integer with a 7-bit prefix (RFC 7541 5.1), the H bit clear. */
static void hpack_int(struct wire *w, size_t v)
{
    uint8_t b;
    if (v < 127) {
        b = (uint8_t)v;
        put(w, &b, 1);
        return;
    }
    b = 127;
    put(w, &b, 1);
    for (v -= 127; v >= 128; v >>= 7) {
        b = (uint8_t)(0x80 | (v & 0x7f));
        put(w, &b, 1);
    }
    b = (uint8_t)v;
    put(w, &b, 1);
}

/* A block of literals without indexing, no Huffman (RFC 7541 6.2.2). */
static void headers_frame(struct wire *w, const struct h2_ref_field *v, size_t n, bool end_stream)
{
    struct wire blk = {.n = 0};
    for (size_t i = 0; i < n; i++) {
        uint8_t zero = 0;
        put(&blk, &zero, 1);
        hpack_int(&blk, v[i].namelen);
        put(&blk, v[i].name, v[i].namelen);
        hpack_int(&blk, v[i].valuelen);
        put(&blk, v[i].value, v[i].valuelen);
    }
    frame_head(w, blk.n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | (end_stream ? NGHTTP2_FLAG_END_STREAM : 0), 1);
    put(w, blk.b, blk.n);
}

struct seen {
    bool reset;      /* an RST_STREAM for stream 1 went out */
    uint32_t code;   /* its error code */
    bool conn_error; /* a GOAWAY went out */
};

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct seen *seen = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM && f->hd.stream_id == 1) {
        seen->reset = true;
        seen->code = f->rst_stream.error_code;
    }
    if (f->hd.type == NGHTTP2_GOAWAY)
        seen->conn_error = true;
    return 0;
}

static bool ends_on_head(const struct h2_ref_req *r) { return !r->open && r->n_data == 0 && r->n_trailers == 0; }

/* DATA frame i carries END_STREAM. */
static bool data_ends(const struct h2_ref_req *r, size_t i)
{
    return !r->open && i + 1 == r->n_data && r->n_trailers == 0;
}

/* The frames of r after the client preface and an empty SETTINGS. */
static void request_frames(struct wire *w, const struct h2_ref_req *r)
{
    static const uint8_t data[16384];
    put(w, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    frame_head(w, 0, NGHTTP2_SETTINGS, 0, 0);
    headers_frame(w, r->head, r->n_head, ends_on_head(r));
    for (size_t i = 0; i < r->n_data; i++) {
        bool end = data_ends(r, i);
        size_t n = r->data[i] < sizeof(data) ? r->data[i] : sizeof(data);
        frame_head(w, n, NGHTTP2_DATA, end ? NGHTTP2_FLAG_END_STREAM : 0, 1);
        put(w, data, n);
    }
    if (r->n_trailers > 0)
        headers_frame(w, r->trailers, r->n_trailers, r->trailers_end);
}

enum h2_ref_verdict h2_ref_nghttp2(const struct h2_ref_req *r)
{
    static struct wire w;
    w.n = 0;
    w.over = false;
    request_frames(&w, r);
    if (w.over)
        return H2_REF_CONN_ERROR;
    struct seen seen = {0};
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return H2_REF_CONN_ERROR;
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    if (nghttp2_session_server_new(&s, cbs, &seen) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return H2_REF_CONN_ERROR;
    }
    ssize_t rv = nghttp2_session_mem_recv(s, w.b, w.n);
    const uint8_t *out;
    for (int i = 0; rv >= 0 && i < 64 && nghttp2_session_mem_send(s, &out) > 0; i++) {
    }
    nghttp2_session_del(s);
    nghttp2_session_callbacks_del(cbs);
    if (rv < 0 || seen.conn_error)
        return H2_REF_CONN_ERROR;
    if (!seen.reset)
        return H2_REF_TAKES;
    return seen.code == NGHTTP2_PROTOCOL_ERROR ? H2_REF_RESETS : H2_REF_OTHER_RESET;
}

static bool fields_bad(struct h2_check_req *c, bool trailers, const struct h2_ref_field *v, size_t n)
{
    const char *why = NULL;
    for (size_t i = 0; i < n; i++)
        if (h2_check_req_field(c, trailers, v[i].name, v[i].namelen, v[i].value, v[i].valuelen, &why) != H2_CHECK_OK)
            return true;
    return false;
}

bool h2_ref_grelay_rejects(const struct h2_ref_req *r)
{
    struct h2_check_req c;
    const char *why = NULL;
    h2_check_req_init(&c);
    if (fields_bad(&c, false, r->head, r->n_head) ||
        h2_check_req_block(&c, false, ends_on_head(r), &why) != H2_CHECK_OK)
        return true;
    for (size_t i = 0; i < r->n_data; i++) {
        if (h2_check_req_data(&c, r->data[i], &why) != H2_CHECK_OK)
            return true;
        if (data_ends(r, i) && h2_check_req_end(&c, &why) != H2_CHECK_OK)
            return true;
    }
    if (r->n_trailers > 0)
        return fields_bad(&c, true, r->trailers, r->n_trailers) ||
               h2_check_req_block(&c, true, r->trailers_end, &why) != H2_CHECK_OK;
    return false;
}
