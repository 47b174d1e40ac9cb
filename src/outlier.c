/* Outlier ejection arithmetic (outlier.h). */
#include "grelay/outlier.h"
#include "grelay/grpc.h"

enum outlier_result outlier_classify(const struct gr_outlier_cfg *cfg, int code)
{
    if (code == OUTLIER_RESET)
        return OUTLIER_FAILURE;
    if (code < 0 || code > GRPC_UNAUTHENTICATED)
        return OUTLIER_IGNORE;
    return (cfg->failure_mask >> (unsigned)code) & 1u ? OUTLIER_FAILURE : OUTLIER_SUCCESS;
}

bool outlier_count(struct outlier *o, const struct gr_outlier_cfg *cfg, enum outlier_result r, int code, uint64_t now)
{
    if (o->until_us > now || r == OUTLIER_IGNORE)
        return false; /* an ejected endpoint's calls in flight say nothing new */
    if (r == OUTLIER_SUCCESS) {
        o->failures = 0;
        return false;
    }
    o->last_failure = code;
    if (o->failures < cfg->consecutive_failures)
        o->failures++;
    return o->failures >= cfg->consecutive_failures;
}

uint64_t outlier_eject(struct outlier *o, const struct gr_outlier_cfg *cfg, uint64_t now)
{
    uint64_t base = cfg->base_ejection_time_ms * 1000, max = cfg->max_ejection_time_ms * 1000;
    if (o->returned_us != 0 && now > o->returned_us) {
        uint64_t calm = (now - o->returned_us) / base;
        o->level = calm >= o->level ? 0 : o->level - (uint32_t)calm;
    }
    uint64_t len = base;
    /* Bounded: at most 63 doublings, and it stops at max. */
    for (uint32_t i = 0; i < o->level && len < max && i < 63; i++)
        len *= 2;
    if (len > max)
        len = max;
    if (len < max)
        o->level++; /* past the cap it grows no further: the decay starts from there */
    o->until_us = now + len;
    o->failures = 0;
    return len;
}

void outlier_return(struct outlier *o, uint64_t now)
{
    o->until_us = 0;
    o->returned_us = now;
    o->failures = 0;
}

size_t outlier_max_ejected(const struct gr_outlier_cfg *cfg, size_t n)
{
    size_t m = n * cfg->max_ejection_percent / 100;
    return m > 0 ? m : 1;
}

const char *outlier_failure_name(int code)
{
    if (code == OUTLIER_RESET)
        return "a reset or lost connection";
    return grpc_status_name((enum grpc_status)code);
}
