/* gRPC-Web codec: see include/grelay/grpcweb.h. */
#include "grelay/grpcweb.h"
#include "grelay/common.h"

#include <string.h>
#include <strings.h>

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool grpcweb_detect(struct grpcweb *w, struct arena *a, const uint8_t *value, size_t len)
{
    static const char base[] = "application/grpc-web";
    const size_t blen = sizeof(base) - 1;
    size_t end = 0;
    while (end < len && value[end] != ';' && value[end] != ' ')
        end++;
    if (end < blen || strncasecmp((const char *)value, base, blen) != 0)
        return false;
    const char *rest = (const char *)value + blen;
    size_t rlen = end - blen;
    bool text = false;
    if (rlen >= 5 && strncasecmp(rest, "-text", 5) == 0) {
        text = true;
        rest += 5;
        rlen -= 5;
    }
    if (rlen > 0 && rest[0] != '+')
        return false;
    char *ct = arena_strndup(a, (const char *)value, end);
    char *up = arena_alloc(a, rlen + sizeof("application/grpc"));
    if (ct == NULL || up == NULL)
        return false;
    memcpy(up, "application/grpc", 16);
    memcpy(up + 16, rest, rlen);
    up[16 + rlen] = '\0';
    memset(w, 0, sizeof(*w));
    w->text = text;
    w->content_type = ct;
    w->upstream_type = up;
    return true;
}

static int b64val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes one complete quantum; returns bytes written or -1. */
static int decode_quad(const uint8_t q[4], uint8_t *out)
{
    int a = b64val(q[0]), b = b64val(q[1]);
    if (a < 0 || b < 0)
        return -1;
    out[0] = (uint8_t)(a << 2 | b >> 4);
    if (q[2] == '=') {
        return q[3] == '=' ? 1 : -1;
    }
    int c = b64val(q[2]);
    if (c < 0)
        return -1;
    out[1] = (uint8_t)((b & 15) << 4 | c >> 2);
    if (q[3] == '=')
        return 2;
    int d = b64val(q[3]);
    if (d < 0)
        return -1;
    out[2] = (uint8_t)((c & 3) << 6 | d);
    return 3;
}

int grpcweb_decode(struct grpcweb *w, const uint8_t *in, size_t len, uint8_t *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        w->quad[w->quad_n++] = in[i];
        if (w->quad_n < 4)
            continue;
        int n = decode_quad(w->quad, out + o);
        if (n < 0)
            return GR_ERR_PROTO;
        o += (size_t)n;
        w->quad_n = 0;
    }
    *out_len = o;
    return GR_OK;
}

size_t grpcweb_base64(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = (uint8_t)b64chars[v >> 18];
        out[o++] = (uint8_t)b64chars[(v >> 12) & 63];
        out[o++] = (uint8_t)b64chars[(v >> 6) & 63];
        out[o++] = (uint8_t)b64chars[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = (uint8_t)b64chars[v >> 18];
        out[o++] = (uint8_t)b64chars[(v >> 12) & 63];
        out[o++] = i + 1 < len ? (uint8_t)b64chars[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

int grpcweb_check_frames(struct grpcweb *w, const uint8_t *data, size_t len, uint64_t max)
{
    size_t i = 0;
    while (i < len) {
        if (w->fskip > 0) {
            size_t n = len - i < w->fskip ? len - i : (size_t)w->fskip;
            w->fskip -= n;
            i += n;
            continue;
        }
        w->fhdr[w->fhdr_n++] = data[i++];
        if (w->fhdr_n < 5)
            continue;
        w->fhdr_n = 0;
        if (w->fhdr[0] > 1)
            return GR_ERR_PROTO;
        uint64_t flen =
            (uint64_t)w->fhdr[1] << 24 | (uint64_t)w->fhdr[2] << 16 | (uint64_t)w->fhdr[3] << 8 | w->fhdr[4];
        if (flen > max)
            return GR_ERR_LIMIT;
        w->fskip = flen;
    }
    return GR_OK;
}

static bool is_tchar(uint8_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c != 0 && memchr("!#$%&'*+-.^_`|~", c, 15) != NULL);
}

bool grpcweb_field_ok(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    if (namelen == 0)
        return false;
    for (size_t i = 0; i < namelen; i++)
        if (!is_tchar(name[i]))
            return false;
    for (size_t i = 0; i < valuelen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return false;
    return true;
}

/* What the trailer frame says instead of trailers it cannot carry (never written). */
static struct gr_hdr invalid_trailers[] = {
    {(const uint8_t *)"grpc-status", (const uint8_t *)"13", 11, 2},
    {(const uint8_t *)"grpc-message", (const uint8_t *)GRPCWEB_INVALID_VALUE, 12, sizeof(GRPCWEB_INVALID_VALUE) - 1},
};

int grpcweb_build_trailer(struct grpcweb *w, struct arena *a, const struct hdr_list *trailers)
{
    static const struct hdr_list invalid = {invalid_trailers, 2, 2, 0};
    for (uint32_t i = 0; i < trailers->n; i++) {
        const struct gr_hdr *h = &trailers->v[i];
        if (h->namelen > 0 && !grpcweb_field_ok(h->name, h->namelen, h->value, h->valuelen)) {
            trailers = &invalid;
            break;
        }
    }
    size_t body = 0;
    for (uint32_t i = 0; i < trailers->n; i++)
        if (trailers->v[i].namelen > 0) /* 0: a removed entry */
            body += trailers->v[i].namelen + 2 + trailers->v[i].valuelen + 2;
    uint8_t *f = arena_alloc(a, 5 + body);
    if (f == NULL)
        return GR_ERR_NOMEM;
    f[0] = 0x80;
    f[1] = (uint8_t)(body >> 24);
    f[2] = (uint8_t)(body >> 16);
    f[3] = (uint8_t)(body >> 8);
    f[4] = (uint8_t)body;
    size_t o = 5;
    for (uint32_t i = 0; i < trailers->n; i++) {
        const struct gr_hdr *h = &trailers->v[i];
        if (h->namelen == 0)
            continue;
        memcpy(f + o, h->name, h->namelen);
        o += h->namelen;
        f[o++] = ':';
        f[o++] = ' ';
        memcpy(f + o, h->value, h->valuelen);
        o += h->valuelen;
        f[o++] = '\r';
        f[o++] = '\n';
    }
    w->trailer = f;
    w->trailer_len = o;
    w->trailer_off = 0;
    w->trailer_built = true;
    return GR_OK;
}

int grpcweb_request(struct grpcweb *w, const uint8_t *data, size_t len, uint64_t max, uint8_t *scratch,
                    size_t scratch_len, int (*emit)(void *ctx, const uint8_t *p, size_t n, size_t wire), void *ctx,
                    size_t *wire_done, const char **why)
{
    /* -text decodes in slices that fit the scratch buffer. */
    const size_t slice = w->text ? scratch_len / 4 * 3 : len;
    *wire_done = 0;
    while (*wire_done < len) {
        size_t wire = len - *wire_done < slice ? len - *wire_done : slice, n = wire;
        const uint8_t *p = data + *wire_done;
        if (w->text) {
            if (grpcweb_decode(w, p, wire, scratch, &n) != GR_OK) {
                *why = "grpc-web-text request body is not valid base64";
                return GR_ERR_PROTO;
            }
            p = scratch;
        }
        w->req_bytes += n;
        int rc = grpcweb_check_frames(w, p, n, max);
        if (rc == GR_ERR_PROTO) {
            *why = "malformed gRPC frame in the gRPC-Web request body";
            return rc;
        }
        if (rc != GR_OK || w->req_bytes > max)
            return GR_ERR_LIMIT;
        if ((rc = emit(ctx, p, n, wire)) != GR_OK)
            return rc;
        *wire_done += wire;
    }
    return GR_OK;
}

size_t grpcweb_pull(struct grpcweb *w, struct buf *q, struct chunk_pool *cp, bool ended,
                    const struct hdr_list *trailers, struct arena *a, uint8_t *out, size_t len, size_t *taken,
                    bool *eof)
{
    size_t n = 0;
    while (w->enc_off < w->enc_n && n < len)
        out[n++] = w->enc[w->enc_off++];
    size_t room = len - n;
    uint8_t raw[12288];
    size_t want = w->text ? (room >= 4 ? room / 4 * 3 : (room > 0 ? 3 : 0)) : room;
    if (w->text && want > sizeof(raw))
        want = sizeof(raw);
    uint8_t *dst = w->text ? raw : out + n;
    size_t got = buf_read(q, cp, dst, want);
    *taken = got;
    if (got < want && q->len == 0 && ended) {
        if (!w->trailer_built && grpcweb_build_trailer(w, a, trailers) != GR_OK) {
            /* Out of memory: a fixed frame, so the client still gets a status. */
            static const uint8_t oom[] = "\x80\0\0\0\x38grpc-status: 13\r\ngrpc-message: grelay is out of memory\r\n";
            w->trailer = (uint8_t *)oom;
            w->trailer_len = sizeof(oom) - 1;
            w->trailer_off = 0;
            w->trailer_built = true;
        }
        size_t t = w->trailer_len - w->trailer_off;
        if (t > want - got)
            t = want - got;
        memcpy(dst + got, w->trailer + w->trailer_off, t);
        w->trailer_off += t;
        got += t;
    }
    if (w->text && got > 0) {
        if (room >= 4) {
            n += grpcweb_base64(raw, got, out + n);
        } else {
            w->enc_n = (uint8_t)grpcweb_base64(raw, got, w->enc);
            w->enc_off = 0;
            while (w->enc_off < w->enc_n && n < len)
                out[n++] = w->enc[w->enc_off++];
        }
    } else if (!w->text) {
        n += got;
    }
    *eof = q->len == 0 && ended && w->trailer_built && w->trailer_off == w->trailer_len && w->enc_off == w->enc_n;
    return n;
}
