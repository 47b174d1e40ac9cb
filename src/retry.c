/* Retry decisions (see include/grelay/retry.h). */
#include "grelay/retry.h"

bool retry_decide(const struct gr_retry_cfg *rp, struct retry_state *rs, enum retry_kind kind, enum grpc_status st,
                  size_t n_endpoints, uint64_t deadline_us, uint64_t now_us, uint64_t *rng, uint64_t *delay_us)
{
    uint64_t delay = 0;
    size_t transparent_max = n_endpoints > 2 ? n_endpoints : 2;
    struct retry_state next = *rs;
    if (kind == RETRY_TRANSPARENT && next.transparent < transparent_max) {
        next.transparent++;
    } else if (next.configured < rp->num_retries &&
               (kind == RETRY_PER_TRY || (rp->retry_on_mask & (1u << (unsigned)st)))) {
        /* Exponential backoff with full jitter: uniform in [0, base * 2^retries], capped. */
        uint64_t cap = rp->backoff.base_interval_ms * 1000ull << (next.configured < 16 ? next.configured : 16);
        if (cap > rp->backoff.max_interval_ms * 1000ull)
            cap = rp->backoff.max_interval_ms * 1000ull;
        delay = gr_rand(rng) % (cap + 1);
        next.configured++;
    } else {
        return false;
    }
    if (deadline_us && now_us + delay + 1000 >= deadline_us)
        return false;
    *rs = next;
    *delay_us = delay;
    return true;
}
