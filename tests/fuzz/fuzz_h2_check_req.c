/* Fuzz target, differential: grelay's request checks (h2_check_req, which
 * replace nghttp2's HTTP messaging on the client session) against nghttp2
 * 1.52 itself (tests/h2ref/h2_ref.c: the request as real frames to a
 * server session with messaging on). Any request on which the two differ
 * aborts. Input: a shape byte (bits 0-2 the DATA frames, at most 4; bit 3
 * END_STREAM on the trailers; bit 4: no END_STREAM at all), one length byte per DATA frame (x 64
 * bytes), then fields: a kind byte (bits 0-3 a name of the table below,
 * or 13-15 a name of the input's bytes; bit 4 in the trailers), a length
 * byte and that many bytes of value (a name of the input's bytes first
 * takes a length byte and its bytes). */
#include "h2_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
    ":method", ":scheme",        ":path",      ":authority",   ":protocol",         ":status", "host",
    "te",      "content-length", "connection", "content-type", "transfer-encoding", "x-a"};
#define N_NAMES (sizeof(names) / sizeof(names[0]))

struct in {
    const uint8_t *p;
    size_t n;
};

static bool take(struct in *in, uint8_t *b)
{
    if (in->n == 0)
        return false;
    *b = *in->p++;
    in->n--;
    return true;
}

/* len bytes (at most max) into out; false past the input's end. */
static bool take_bytes(struct in *in, uint8_t *out, size_t max, size_t *len)
{
    uint8_t l;
    if (!take(in, &l))
        return false;
    *len = l % (max + 1);
    if (*len > in->n)
        *len = in->n;
    memcpy(out, in->p, *len);
    in->p += *len;
    in->n -= *len;
    return true;
}

static bool one_field(struct in *in, struct h2_ref_req *r)
{
    uint8_t kind;
    if (!take(in, &kind))
        return false;
    bool trailers = kind & 0x10;
    size_t *n = trailers ? &r->n_trailers : &r->n_head;
    if (*n == H2_REF_MAX_FIELDS)
        return false;
    struct h2_ref_field *f = trailers ? &r->trailers[*n] : &r->head[*n];
    unsigned k = kind & 0x0f;
    if (k < N_NAMES) {
        f->namelen = strlen(names[k]);
        memcpy(f->name, names[k], f->namelen);
    } else if (!take_bytes(in, f->name, H2_REF_MAX_NAME, &f->namelen)) {
        return false;
    }
    if (!take_bytes(in, f->value, H2_REF_MAX_VALUE, &f->valuelen))
        return false;
    (*n)++;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct h2_ref_req r;
    struct in in = {data, size};
    uint8_t shape, len;
    memset(&r, 0, sizeof(r));
    r.what = "fuzz input";
    if (!take(&in, &shape))
        return 0;
    r.n_data = shape & 7;
    if (r.n_data > H2_REF_MAX_DATA)
        r.n_data = H2_REF_MAX_DATA;
    r.trailers_end = shape & 8;
    r.open = shape & 16;
    for (size_t i = 0; i < r.n_data; i++)
        r.data[i] = take(&in, &len) ? (size_t)len * 64 : 0;
    while (one_field(&in, &r)) {
    }
    enum h2_ref_verdict v = h2_ref_nghttp2(&r);
    if (v == H2_REF_CONN_ERROR || v == H2_REF_OTHER_RESET)
        return 0; /* framing or flow control, not HTTP messaging */
    bool ref = v == H2_REF_RESETS, ours = h2_ref_grelay_rejects(&r);
    if (ref != ours) {
        fprintf(stderr, "nghttp2 %s this request, grelay %s it\n", ref ? "resets" : "takes", ours ? "resets" : "takes");
        abort();
    }
    return 0;
}
