/* When a failed attempt of a call is tried again, and after how long: the
 * decision alone, with no call or timer in it (stream.c acts on it). */
#ifndef GRELAY_RETRY_H
#define GRELAY_RETRY_H

#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/grpc.h"

/* How a failed attempt may be retried. */
enum retry_kind {
    RETRY_TRANSPARENT, /* nothing reached the application: always, within bounds */
    RETRY_STATUS,      /* a status in the route's retry_on */
    RETRY_PER_TRY,     /* the route's per-try timeout fired */
};

/* What a call has used up. */
struct retry_state {
    uint32_t configured;  /* retries made under the route's retry_policy */
    uint32_t transparent; /* transparent retries made: at most max(2, endpoints) */
};

/* Decides whether the attempt that failed with st (kind) is retried:
 * transparently while fewer than max(2, n_endpoints) were made, else under
 * the route's policy rp (num_retries, retry_on, and always on a per-try
 * timeout) after a backoff drawn uniformly from [0, base * 2^retries],
 * capped at max_interval. Never when the deadline (0: none) leaves less
 * than 1 ms after the backoff. On true, *rs counts the retry and *delay_us
 * says how long to wait. */
bool retry_decide(const struct gr_retry_cfg *rp, struct retry_state *rs, enum retry_kind kind, enum grpc_status st,
                  size_t n_endpoints, uint64_t deadline_us, uint64_t now_us, uint64_t *rng, uint64_t *delay_us);

#endif
