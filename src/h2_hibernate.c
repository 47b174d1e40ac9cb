/* Hibernation of idle HTTP/2 client connections (see h2_hibernate.h). */
#include "grelay/h2_hibernate.h"
#include "grelay/h2_common.h"
#include "grelay/log.h"

#include <string.h>

#define PREFACE_LEN H2_PREFACE_LEN
#define FRAME_HDR 9
#define DEFAULT_WINDOW 65535

static uint8_t *put_frame_hdr(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    memset(p + 5, 0, 4); /* stream 0 */
    return p + FRAME_HDR;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

void h2_hibernate_init(struct h2_sleep *sl)
{
    memset(sl, 0, sizeof(*sl));
    h2_common_frames_init(&sl->frames);
    sl->settings_unacked = 1;
}

static int submit_table_size(struct h2_sleep *sl, nghttp2_session *h2, uint32_t size)
{
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, size};
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, &iv, 1) != 0)
        return GR_ERR_NOMEM;
    sl->settings_unacked++;
    sl->table_acks = sl->settings_unacked;
    return GR_OK;
}

void h2_hibernate_on_request(struct h2_sleep *sl, nghttp2_session *h2)
{
    if (sl->table == H2_TABLE_GROWN)
        sl->table = H2_TABLE_FULL;
    else if (sl->table == H2_TABLE_EMPTY && ++sl->calls_empty >= H2_TABLE_GROW_AFTER &&
             submit_table_size(sl, h2, 4096) == GR_OK)
        sl->table = H2_TABLE_GROWING; /* busy again: compression back */
}

void h2_hibernate_on_ack(struct h2_sleep *sl)
{
    if (sl->reviving || sl->settings_unacked == 0)
        return;
    sl->settings_unacked--;
    if (sl->table_acks > 0 && --sl->table_acks == 0) {
        if (sl->table == H2_TABLE_SHRINKING)
            sl->table = H2_TABLE_EMPTY;
        else if (sl->table == H2_TABLE_GROWING)
            sl->table = H2_TABLE_GROWN;
    }
}

bool h2_hibernate_take_ack(struct h2_sleep *sl, const uint8_t *data, size_t len)
{
    static const uint8_t ack[FRAME_HDR] = {0, 0, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, 0, 0, 0};
    if (len != FRAME_HDR || sl->settings_unacked != 1 || sl->table_acks != 0 || sl->last_stream != 0 ||
        !h2_common_frames_at_boundary(&sl->frames) || memcmp(data, ack, FRAME_HDR) != 0)
        return false;
    sl->settings_unacked = 0;
    return true;
}

enum h2_idle h2_hibernate_step(struct h2_sleep *sl, nghttp2_session *h2, int32_t full, uint8_t wu[H2_WINDOW_UPDATE_LEN],
                               size_t *wu_len)
{
    *wu_len = 0;
    if (nghttp2_session_want_write(h2) || !h2_common_frames_at_boundary(&sl->frames))
        return H2_IDLE_WAIT;
    /* A connection that has had no header block (no stream yet) may sleep as
     * it is: the client's HPACK table is empty and of the default size a new
     * session's decoder starts with, so nothing needs shrinking, and the
     * client may still owe the ACK of our first SETTINGS (the revived
     * session then waits for that ACK itself, h2_hibernate_revive). The
     * table stays FULL: the client may index headers from its first call. */
    int32_t last = nghttp2_session_get_last_proc_stream_id(h2);
    bool fresh = last == 0 && sl->table == H2_TABLE_FULL && sl->table_acks == 0 && sl->settings_unacked <= 1;
    if (!fresh) {
        if (sl->table == H2_TABLE_FULL) {
            sl->calls_empty = 0;
            if (submit_table_size(sl, h2, 0) != GR_OK)
                return H2_IDLE_BUSY;
            sl->table = H2_TABLE_SHRINKING;
            return H2_IDLE_WAIT;
        }
        if (sl->table == H2_TABLE_GROWING || sl->table == H2_TABLE_GROWN)
            return H2_IDLE_BUSY; /* a grow not confirmed by a header block yet */
        if (sl->table != H2_TABLE_EMPTY || sl->settings_unacked > 0)
            return H2_IDLE_WAIT;
    }
    /* A new session's send window starts at 65535: a smaller one is used up
     * by a response on a stream of the past (see h2_revive), which the
     * client's initial stream window must allow. The client's window must be
     * at most full. */
    int32_t send_window = nghttp2_session_get_remote_window_size(h2);
    int32_t recv_left = nghttp2_session_get_local_window_size(h2);
    uint32_t stream_window = nghttp2_session_get_remote_settings(h2, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    if (send_window < 0 || recv_left < 0 || recv_left > full ||
        (send_window < DEFAULT_WINDOW && (last <= 0 || DEFAULT_WINDOW - send_window > (int32_t)stream_window)))
        return H2_IDLE_BUSY;
    for (int i = 0; i < 6; i++)
        sl->remote_settings[i] = nghttp2_session_get_remote_settings(h2, (nghttp2_settings_id)(i + 1));
    sl->remote_window = send_window;
    sl->last_stream = last;
    if (recv_left < full) {
        /* Top the client up to a full window, where a new session starts. */
        put_u32(put_frame_hdr(wu, 4, NGHTTP2_WINDOW_UPDATE, 0), (uint32_t)(full - recv_left));
        *wu_len = H2_WINDOW_UPDATE_LEN;
    }
    return H2_IDLE_ASLEEP;
}

void h2_hibernate_goaway(const struct h2_sleep *sl, uint32_t code, uint8_t out[H2_GOAWAY_LEN])
{
    h2_common_goaway(sl->last_stream, code, out);
}

/* The body of the response on the stream of the past: as many bytes as
 * the new session's send window must lose. Never reaches the client. */
static ssize_t debt_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)ud;
    struct h2_sleep *sl = src->ptr;
    size_t n = sl->debt < length ? sl->debt : length;
    memset(buf, 0, n);
    sl->debt -= (uint32_t)n;
    if (sl->debt == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Runs the session's output and throws it away: the client has had it
 * (SETTINGS, WINDOW_UPDATE) from the session before. */
static int drop_output(nghttp2_session *h2)
{
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h2, &data)) > 0)
        ;
    return n == 0 ? GR_OK : GR_ERR_PROTO;
}

int h2_hibernate_revive(struct h2_sleep *sl, nghttp2_session *h2)
{
    sl->reviving = true;
    int rc = drop_output(h2);
    /* The connection's past, as the new session must believe it. */
    uint8_t past[PREFACE_LEN + FRAME_HDR + 6 * 6 + FRAME_HDR + FRAME_HDR + 4 + FRAME_HDR + 16], *p = past;
    memcpy(p, H2_PREFACE, PREFACE_LEN);
    p += PREFACE_LEN;
    p = put_frame_hdr(p, 6 * 6, NGHTTP2_SETTINGS, 0);
    for (int i = 0; i < 6; i++) {
        p[0] = 0;
        p[1] = (uint8_t)(i + 1);
        p = put_u32(p + 2, sl->remote_settings[i]);
    }
    if (sl->settings_unacked == 0) /* else the client's own ACK is still to come */
        p = put_frame_hdr(p, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK);
    if (sl->remote_window > DEFAULT_WINDOW)
        p = put_u32(put_frame_hdr(p, 4, NGHTTP2_WINDOW_UPDATE, 0), (uint32_t)(sl->remote_window - DEFAULT_WINDOW));
    if (sl->last_stream > 0) {
        /* The client's last stream, opened again as a GET that ends at once,
         * so that the new session knows which ids are past; its response
         * (dropped) uses up the send window the client has not returned.
         * HPACK: static-table entries and a literal never indexed, so the
         * decoder's table stays empty; :status 200 is static for the encoder. */
        static const uint8_t block[] = {0x82, 0x86, 0x84, 0x01, 0x01, 'x'}; /* GET http / :authority x */
        p = put_frame_hdr(p, sizeof(block), NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM);
        put_u32(p - 4, (uint32_t)sl->last_stream);
        memcpy(p, block, sizeof(block));
        p += sizeof(block);
    }
    if (rc == GR_OK && nghttp2_session_mem_recv(h2, past, (size_t)(p - past)) != p - past)
        rc = GR_ERR_PROTO;
    if (rc == GR_OK && sl->last_stream > 0) {
        static const nghttp2_nv status = {(uint8_t *)":status", (uint8_t *)"200", 7, 3,
                                          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
        sl->debt = sl->remote_window < DEFAULT_WINDOW ? (uint32_t)(DEFAULT_WINDOW - sl->remote_window) : 0;
        nghttp2_data_provider prd = {.source = {.ptr = sl}, .read_callback = debt_read};
        if (nghttp2_submit_response(h2, sl->last_stream, &status, 1, sl->debt > 0 ? &prd : NULL) != 0)
            rc = GR_ERR_PROTO;
    }
    if (rc == GR_OK)
        rc = drop_output(h2);
    if (rc == GR_OK && (sl->debt != 0 || nghttp2_session_get_remote_window_size(h2) != sl->remote_window))
        rc = GR_ERR_PROTO; /* cannot happen: h2_idle_step checked the windows */
    sl->reviving = false;
    sl->calls_empty = 0; /* counts calls of this waking only */
    return rc;
}
