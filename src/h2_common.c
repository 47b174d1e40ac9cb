/* Options both nghttp2 sessions share, and the abuse guard of client
 * connections (see include/grelay/h2_common.h). */
#include "grelay/h2_common.h"
#include "grelay/common.h"

#include <string.h>

/* nghttp2's limits, set here so that both sides have them whatever the
 * library's defaults become (docs/limits.md, HTTP/2 abuse). */
#define MAX_OUTBOUND_ACK 1000 /* SETTINGS and PING ACKs queued unsent: past it the session ends (FLOODED) */
#define MAX_SETTINGS 32       /* entries in one SETTINGS frame (RFC 9113 defines 6) */
#define MAX_CONTINUATIONS 8   /* CONTINUATION frames after one HEADERS (CVE-2024-28182) */
/* nghttp2's own RST_STREAM rate limit (server side, CVE-2023-44487): 10 x
 * its defaults, a backstop behind h2_guard's reset budget, which counts
 * only resets that cost us something and answers ENHANCE_YOUR_CALM. */
#define LIB_RESET_BURST 10000
#define LIB_RESET_RATE 330

int h2_common_options(nghttp2_option **opt)
{
    if (nghttp2_option_new(opt) != 0) {
        *opt = NULL;
        return GR_ERR_NOMEM;
    }
    nghttp2_option_set_no_auto_window_update(*opt, 1);
    nghttp2_option_set_no_closed_streams(*opt, 1); /* we keep no priority tree: do not hold closed streams */
    /* HPACK (docs/limits.md, Header blocks): our encoders keep at most
     * 4 KiB of table whatever SETTINGS_HEADER_TABLE_SIZE a peer offers
     * (nghttp2's default, pinned here); our decoders' tables are bounded by
     * the 4 KiB we advertise (the default, never raised). */
    nghttp2_option_set_max_deflate_dynamic_table_size(*opt, 4096);
    /* Any block we accept must be one we can forward: nghttp2 refuses to
     * send a block whose bound (12 + name + value a field, less than the
     * 32 + name + value we count) passes 64 KiB by default, and the call
     * would hang. Ours: max_request_headers (at most 1 MiB), upstream
     * response headers (256 KiB), plus the few fields grelay adds. */
    nghttp2_option_set_max_send_header_block_length(*opt, H2_MAX_SEND_HEADER_BLOCK);
    /* Abuse limits. */
    nghttp2_option_set_max_outbound_ack(*opt, MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(*opt, MAX_SETTINGS);
    nghttp2_option_set_max_continuations(*opt, MAX_CONTINUATIONS);
    nghttp2_option_set_max_reserved_remote_streams(*opt, 0); /* we never accept a push */
    nghttp2_option_set_stream_reset_rate_limit(*opt, LIB_RESET_BURST, LIB_RESET_RATE);
    return GR_OK;
}

void h2_common_free(nghttp2_session_callbacks *cbs, nghttp2_option *opt)
{
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (opt != NULL)
        nghttp2_option_del(opt);
}

void h2_bucket_init(struct h2_bucket *b, uint32_t burst, uint32_t now_ms)
{
    b->milli = burst * 1000u;
    b->at_ms = now_ms;
}

bool h2_bucket_take(struct h2_bucket *b, uint32_t burst, uint32_t rate, uint32_t n, uint32_t now_ms)
{
    uint64_t full = (uint64_t)burst * 1000u;
    uint64_t milli = b->milli + (uint64_t)(uint32_t)(now_ms - b->at_ms) * rate; /* rate milli-tokens a ms */
    b->at_ms = now_ms;
    if (milli > full)
        milli = full;
    uint64_t cost = (uint64_t)n * 1000u;
    bool ok = milli >= cost;
    b->milli = (uint32_t)(ok ? milli - cost : milli);
    return ok;
}

void h2_bucket_give(struct h2_bucket *b, uint32_t burst, uint32_t n)
{
    uint64_t milli = b->milli + (uint64_t)n * 1000u, full = (uint64_t)burst * 1000u;
    b->milli = (uint32_t)(milli > full ? full : milli);
}

void h2_guard_init(struct h2_guard *g, uint32_t reset_burst, uint32_t now_ms)
{
    memset(g, 0, sizeof(*g));
    h2_bucket_init(&g->resets, reset_burst, now_ms);
    h2_bucket_init(&g->glitches, H2_GLITCH_BURST, now_ms);
}

/* The client opened stream id, above top: the memory slides. */
static void guard_advance(struct h2_guard *g, int32_t id)
{
    uint32_t k = g->top == 0 ? H2_GUARD_IDS : (uint32_t)(id - g->top) / 2;
    g->used = k >= H2_GUARD_IDS ? 1 : (g->used << k) | 1;
    g->reset = k >= H2_GUARD_IDS ? 0 : g->reset << k;
    g->closed = k >= H2_GUARD_IDS ? 0 : g->closed << k;
    g->top = id;
}

/* The bit of client stream id (odd, at most top) in used and reset, or 0
 * when it is too old to be remembered. */
static uint64_t guard_bit(const struct h2_guard *g, int32_t id)
{
    uint32_t i = (uint32_t)(g->top - id) / 2;
    return i < H2_GUARD_IDS ? (uint64_t)1 << i : 0;
}

void h2_guard_sent_rst(struct h2_guard *g, int32_t id)
{
    if ((id & 1) && id <= g->top)
        g->reset |= guard_bit(g, id);
}

void h2_guard_closed(struct h2_guard *g, int32_t id)
{
    if ((id & 1) && id <= g->top)
        g->closed |= guard_bit(g, id);
}

/* DATA or HEADERS on client stream id (at most top0, the highest before
 * these bytes): 0 when nghttp2 may have it, a glitch count, or an error. */
static uint32_t on_closed(struct h2_guard *g, nghttp2_session *h2, uint8_t type, int32_t id, int32_t top0,
                          uint32_t *glitch, const char **why)
{
    if (!(id & 1) || id > top0 || nghttp2_session_find_stream(h2, id) != NULL)
        return NGHTTP2_NO_ERROR; /* idle, ours, or open: nghttp2 decides */
    uint64_t bit = guard_bit(g, id);
    if (bit == 0) {
        *glitch += 1; /* too old to tell whether we reset it: ignored, as nghttp2 does */
        return NGHTTP2_NO_ERROR;
    }
    if (g->reset & bit)
        return NGHTTP2_NO_ERROR; /* we reset it: what was on its way is ignored (RFC 9113 5.1) */
    if (type == NGHTTP2_HEADERS && !(g->used & bit)) {
        *why = "HEADERS on a stream id below one already used";
        return NGHTTP2_PROTOCOL_ERROR;
    }
    if ((g->used & bit) && !(g->closed & bit))
        return NGHTTP2_NO_ERROR; /* nghttp2 refused its HEADERS (RST_STREAM on its way): ignored */
    *why = type == NGHTTP2_DATA ? "DATA on a closed stream" : "HEADERS on a closed stream";
    return NGHTTP2_STREAM_CLOSED; /* closed by both ends, by the client's reset, or implicitly (never used) */
}

/* The verdict on one frame header (before nghttp2 reads the frame). */
static uint32_t frame_verdict(struct h2_guard *g, nghttp2_session *h2, const uint8_t *hd, int32_t top0, uint32_t now_ms,
                              const char **why)
{
    uint32_t len = (uint32_t)hd[0] << 16 | (uint32_t)hd[1] << 8 | hd[2];
    uint8_t type = hd[3], flags = hd[4];
    int32_t id =
        (int32_t)(((uint32_t)hd[5] << 24 | (uint32_t)hd[6] << 16 | (uint32_t)hd[7] << 8 | hd[8]) & 0x7fffffffu);
    uint32_t glitch = 0, code = NGHTTP2_NO_ERROR;
    switch (type) {
    case NGHTTP2_DATA:
        glitch = len == 0 && !(flags & NGHTTP2_FLAG_END_STREAM) ? 1u : 0u;
        code = on_closed(g, h2, type, id, top0, &glitch, why);
        break;
    case NGHTTP2_HEADERS:
        if ((id & 1) && id > g->top)
            guard_advance(g, id);
        else
            code = on_closed(g, h2, type, id, top0, &glitch, why);
        break;
    case NGHTTP2_SETTINGS:
        glitch = !(flags & NGHTTP2_FLAG_ACK) && g->settings_seen ? 1u : 0u;
        g->settings_seen = g->settings_seen || !(flags & NGHTTP2_FLAG_ACK);
        break;
    case NGHTTP2_PING:
        if (!(flags & NGHTTP2_FLAG_ACK)) {
            glitch = g->answered ? 0u : 1u;
            g->answered = false;
        }
        break;
    case NGHTTP2_PRIORITY: glitch = 1; break;
    case NGHTTP2_RST_STREAM:
    case NGHTTP2_PUSH_PROMISE:
    case NGHTTP2_GOAWAY:
    case NGHTTP2_WINDOW_UPDATE:
    case NGHTTP2_CONTINUATION: break;
    default: glitch = 1; /* an extension or unknown type: nghttp2 skips it */
    }
    if (code == NGHTTP2_NO_ERROR && glitch > 0 &&
        !h2_bucket_take(&g->glitches, H2_GLITCH_BURST, H2_GLITCH_RATE, glitch, now_ms)) {
        *why = "too many frames with no use (empty DATA, unknown types, PRIORITY, PING, SETTINGS)";
        code = NGHTTP2_ENHANCE_YOUR_CALM;
    }
    return code;
}

/* What the guard's scan hands each frame header. */
struct guard_scan {
    struct h2_guard *g;
    nghttp2_session *h2;
    int32_t top0;    /* the highest stream id before these bytes */
    uint32_t now_ms; /* the buckets' clock */
    uint32_t code;   /* the verdict that stopped the scan, or NGHTTP2_NO_ERROR */
    const char *why; /* and what happened */
};

static bool guard_frame(void *arg, const uint8_t hdr[9])
{
    struct guard_scan *sc = arg;
    sc->code = frame_verdict(sc->g, sc->h2, hdr, sc->top0, sc->now_ms, &sc->why);
    if (sc->code == NGHTTP2_NO_ERROR)
        return true;
    sc->g->ended = true;
    return false;
}

size_t h2_guard_scan(struct h2_guard *g, struct h2_frames *frames, nghttp2_session *h2, const uint8_t *p, size_t n,
                     uint32_t now_ms, uint32_t *code, const char **why)
{
    struct guard_scan sc = {.g = g, .h2 = h2, .top0 = g->top, .now_ms = now_ms, .code = NGHTTP2_NO_ERROR};
    size_t ok = h2_common_frames_feed(frames, p, n, guard_frame, &sc);
    *code = sc.code;
    if (sc.why != NULL)
        *why = sc.why;
    return ok;
}

void h2_common_goaway(int32_t last, uint32_t code, uint8_t out[H2_GOAWAY_LEN])
{
    static const uint8_t hdr[9] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    memcpy(out, hdr, sizeof(hdr));
    uint32_t v[2] = {(uint32_t)last & 0x7fffffffu, code};
    for (int i = 0; i < 8; i++)
        out[9 + i] = (uint8_t)(v[i / 4] >> (24 - 8 * (i % 4)));
}

void h2_common_ping(const uint8_t opaque[8], uint8_t out[H2_PING_LEN])
{
    static const uint8_t hdr[9] = {0, 0, 8, NGHTTP2_PING, 0, 0, 0, 0, 0};
    memcpy(out, hdr, sizeof(hdr));
    memcpy(out + sizeof(hdr), opaque, 8);
}

bool h2_common_is_ping_ack(const uint8_t *p, size_t n, const uint8_t opaque[8])
{
    return n == H2_PING_LEN && p[0] == 0 && p[1] == 0 && p[2] == 8 && p[3] == NGHTTP2_PING &&
           p[4] == NGHTTP2_FLAG_ACK && (p[5] & 0x7f) == 0 && p[6] == 0 && p[7] == 0 && p[8] == 0 &&
           memcmp(p + 9, opaque, 8) == 0;
}

void h2_common_frames_init(struct h2_frames *t)
{
    memset(t, 0, sizeof(*t));
    t->preface = H2_PREFACE_LEN;
}

size_t h2_common_frames_feed(struct h2_frames *t, const uint8_t *p, size_t n, h2_frame_cb on_frame, void *arg)
{
    size_t i = 0;
    if (t->preface > 0) {
        i = n < t->preface ? n : t->preface;
        t->preface = (uint8_t)(t->preface - i);
    }
    while (i < n) {
        if (t->left > 0) {
            size_t k = n - i < t->left ? n - i : t->left;
            t->left -= (uint32_t)k;
            i += k;
            continue;
        }
        size_t start = t->have > 0 ? 0 : i; /* a header begun in an earlier read: nghttp2 has its start */
        size_t k = n - i < 9u - t->have ? n - i : 9u - t->have;
        memcpy(t->hdr + t->have, p + i, k);
        t->have = (uint8_t)(t->have + k);
        i += k;
        if (t->have < 9)
            break;
        t->have = 0;
        t->left = (uint32_t)t->hdr[0] << 16 | (uint32_t)t->hdr[1] << 8 | t->hdr[2];
        uint8_t type = t->hdr[3], flags = t->hdr[4];
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE || type == NGHTTP2_CONTINUATION)
            t->in_block = !(flags & NGHTTP2_FLAG_END_HEADERS);
        if (on_frame != NULL && !on_frame(arg, t->hdr))
            return start;
    }
    return n;
}

bool h2_common_frames_at_boundary(const struct h2_frames *t)
{
    return t->preface == 0 && t->left == 0 && t->have == 0 && !t->in_block;
}

bool h2_common_frames_in_block(const struct h2_frames *t)
{
    /* While a payload comes (left > 0), hdr[] is its frame's header. */
    return t->in_block || (t->left > 0 && (t->hdr[3] == NGHTTP2_HEADERS || t->hdr[3] == NGHTTP2_CONTINUATION));
}

void h2_common_withhold_window(nghttp2_session *session, int32_t n)
{
    int32_t left = nghttp2_session_get_effective_local_window_size(session) - n;
    (void)nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, left > 0 ? left : 0);
}
