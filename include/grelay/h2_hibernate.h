/* Hibernation of idle HTTP/2 client connections.
 *
 * An idle nghttp2 server session costs about 25 KiB (its 16 KiB outbound
 * frame buffer, HPACK tables, the stream map, the session itself). A
 * connection with no call for the listener's `hibernate_after` gives all of
 * it back and keeps only what the next session needs to carry on the same
 * connection: the client's SETTINGS and our send window (~40 bytes). The
 * first bytes the client sends afterwards build a new session and feed it
 * that past (client preface, the client's SETTINGS, the ACK of ours, a
 * WINDOW_UPDATE), with the new session's own output of that past dropped.
 *
 * What makes the swap invisible to the client:
 * - HPACK decoding: before hibernating we advertise SETTINGS_HEADER_TABLE_SIZE
 *   0 and wait for its ACK; the client's encoder then has an empty table and
 *   may not refer to any entry, so a fresh decoder is in step. The first call
 *   after waking advertises 4096 again, so busy connections keep compression.
 * - HPACK encoding: a fresh encoder's table is a prefix (newest first) of the
 *   client's decoder table; both insert at the front and evict the oldest
 *   first, so they stay in step without any exchange.
 * - Flow control: the client is given a full connection window before we let
 *   go (a WINDOW_UPDATE for whatever it lacks), and the new session starts
 *   with the same full window.
 * - Framing: only at a frame boundary, outside a header block, with nothing
 *   left to write and every SETTINGS of ours acknowledged.
 * - Stream ids and our send window: the new session is fed the client's last
 *   stream again as a GET that ends at once; its response (dropped) uses up
 *   exactly the send window the client has not returned. The new session
 *   then knows the old ids as closed ones, as the old session did. */
#ifndef GRELAY_H2_HIBERNATE_H
#define GRELAY_H2_HIBERNATE_H

#include "grelay/common.h"
#include "grelay/h2_common.h"

#include <nghttp2/nghttp2.h>

/* The client's HPACK encoder table, as our SETTINGS have shaped it.
 * A grow is confirmed only by a header block after its ACK: a client that
 * saw a grow and then a shrink with no block between may signal both sizes
 * in its next block, and the larger one would break the limit then in force. */
enum h2_table {
    H2_TABLE_FULL,      /* default size: the client may index headers */
    H2_TABLE_SHRINKING, /* size 0 sent, its ACK not in yet */
    H2_TABLE_EMPTY,     /* size 0 acknowledged: the client's table is empty */
    H2_TABLE_GROWING,   /* size 4096 sent again, its ACK not in yet */
    H2_TABLE_GROWN,     /* acknowledged; FULL after the next header block */
};
/* Calls on a connection with an empty table, in one waking (between a
 * wake-up and the next hibernation), before it asks for 4096 again: a
 * connection busy enough for compression to pay, not one call a minute. */
#define H2_TABLE_GROW_AFTER 16

/* What one connection keeps to hibernate and wake up. */
struct h2_sleep {
    struct h2_frames frames;     /* where the client's bytes stand between frames */
    uint16_t settings_unacked;   /* our SETTINGS frames the client has not acknowledged */
    uint16_t table_acks;         /* ACKs still due up to the one that changes the HPACK table size */
    uint16_t calls_empty;        /* calls begun since waking while the client's HPACK table is empty */
    uint8_t table;               /* enum h2_table: the client's HPACK encoder table */
    bool reviving;               /* a new session is being fed the connection's past */
    uint32_t remote_settings[6]; /* while hibernating: the client's SETTINGS 1..6 */
    int32_t remote_window;       /* while hibernating: our connection-level send window */
    int32_t last_stream;         /* while hibernating: the last stream id the client used */
    uint32_t debt;               /* while reviving: send window to use up (below 65535) */
};

/* A new connection whose session has just queued our first SETTINGS. */
void h2_hibernate_init(struct h2_sleep *sl);
/* Called from the session's callbacks: a request's header block began on
 * h2 (may queue a SETTINGS that grows the client's table again), a
 * SETTINGS ACK came. */
void h2_hibernate_on_request(struct h2_sleep *sl, nghttp2_session *h2);
void h2_hibernate_on_ack(struct h2_sleep *sl);
/* Bytes from a client asleep: when they are exactly one SETTINGS ACK and
 * our first SETTINGS is still unacknowledged, it is taken here (counted as
 * on_ack does) and true is returned: no session needs building for it. */
bool h2_hibernate_take_ack(struct h2_sleep *sl, const uint8_t *data, size_t len);

/* One step towards hibernation for a connection idle past its listener's
 * hibernate_after. */
enum h2_idle {
    H2_IDLE_ASLEEP, /* hibernated: the caller frees the session */
    H2_IDLE_WAIT,   /* on the way (an ACK or a write is due): ask again soon */
    H2_IDLE_BUSY,   /* cannot hibernate now (a call is open, windows are odd) */
};
/* The bytes of a WINDOW_UPDATE frame on stream 0. */
#define H2_WINDOW_UPDATE_LEN 13
/* For an idle session h2 (no stream, nothing queued on the socket: the
 * caller checks) whose connection window is full_window. On ASLEEP the
 * session's needs for later are recorded in sl; the caller frees h2 and
 * sends the *wu_len bytes of wu (a WINDOW_UPDATE topping the client up
 * to a full window; none when *wu_len is 0). */
enum h2_idle h2_hibernate_step(struct h2_sleep *sl, nghttp2_session *h2, int32_t full_window,
                               uint8_t wu[H2_WINDOW_UPDATE_LEN], size_t *wu_len);
/* A GOAWAY with error code `code` for a hibernating connection (no
 * session): its last stream id is the last one the client used. */
void h2_hibernate_goaway(const struct h2_sleep *sl, uint32_t code, uint8_t out[H2_GOAWAY_LEN]);
/* Feeds h2, a new session that has just queued our SETTINGS and window,
 * the connection's past. GR_OK, or GR_ERR_NOMEM / GR_ERR_PROTO (the caller
 * frees h2). */
int h2_hibernate_revive(struct h2_sleep *sl, nghttp2_session *h2);

#endif
