/* Outlier ejection (passive health from real calls), the arithmetic: one
 * struct outlier per pool, so per endpoint per worker. Each worker counts
 * only what its own calls see and ejects on its own: no lock, no shared
 * write; the cost is that an endpoint that fails every call gets up to
 * workers x consecutive_failures failed attempts before every worker has
 * ejected it. pool.c applies the decisions (pool_ejected, the timer of the
 * return, logs and metrics); nothing here touches a clock or a loop, so
 * the unit tests drive it with made-up times. */
#ifndef GRELAY_OUTLIER_H
#define GRELAY_OUTLIER_H

#include "grelay/common.h"
#include "grelay/config_types.h"

/* What an attempt's end says of its endpoint (outlier_classify). */
enum outlier_result {
    OUTLIER_IGNORE,  /* says nothing: the client cancelled, grelay's own deadline or per-try timeout */
    OUTLIER_SUCCESS, /* a status outside failure_codes: the run of failures ends */
    OUTLIER_FAILURE, /* a status in failure_codes, an upstream reset or a lost connection */
};

/* Why an endpoint is ejected (the reason label, /clusters). */
enum outlier_reason {
    OUTLIER_REASON_NONE,
    OUTLIER_REASON_CONNECT,  /* its connects failed (1 s doubling to 30 s, always on) */
    OUTLIER_REASON_FAILURES, /* consecutive_failures calls in a row failed (outlier_detection) */
};

/* The attempt ended with no status from the backend: a reset of its
 * stream, a lost connection, or a stream ended without trailers. */
#define OUTLIER_RESET (-2)
/* The attempt ended without anything the backend said (grelay ended it). */
#define OUTLIER_NOTHING (-1)

/* One endpoint's record, as one worker sees it. */
struct outlier {
    uint32_t failures;    /* failed attempts in a row since the last success or return */
    uint32_t level;       /* ejections in a row: the next lasts base_ejection_time << level, capped */
    uint64_t until_us;    /* ejected by failed calls until then (gr_now_us clock); 0: not ejected */
    uint64_t returned_us; /* when the latest ejection ended; level decays from then */
    int last_failure;     /* what the latest failure was: a grpc-status, or OUTLIER_RESET */
};

/* What code (a grpc-status 0..16, OUTLIER_RESET or OUTLIER_NOTHING) means
 * under cfg. */
enum outlier_result outlier_classify(const struct gr_outlier_cfg *cfg, int code);
/* Counts an attempt's result at now. Returns true when the run of failures
 * reached consecutive_failures: an ejection is due (outlier_eject), if the
 * cap allows; the run stays at the threshold until then, so the next
 * failure asks again. Results while ejected are not counted. */
bool outlier_count(struct outlier *o, const struct gr_outlier_cfg *cfg, enum outlier_result r, int code, uint64_t now);
/* Ejects at now and returns for how long (us): base_ejection_time <<
 * level, capped at max_ejection_time. The level ("in a row") first drops
 * by one per base_ejection_time spent back in service since the last
 * return (Envoy drops it by one per interval without an ejection), then
 * grows by one. */
uint64_t outlier_eject(struct outlier *o, const struct gr_outlier_cfg *cfg, uint64_t now);
/* The ejection ended at now: the endpoint takes calls again, its run of
 * failures starts from zero. */
void outlier_return(struct outlier *o, uint64_t now);
/* How many of n endpoints may be ejected by failed calls at once: n x
 * max_ejection_percent / 100 rounded down, but at least one (n > 0). */
size_t outlier_max_ejected(const struct gr_outlier_cfg *cfg, size_t n);
/* A failure as the E_OUTLIER_CODE gauge keeps it (0 stays "none"): 1 a
 * reset, 2 + the grpc-status otherwise; and back. */
static inline uint64_t outlier_code_slot(int code) { return code == OUTLIER_RESET ? 1 : (uint64_t)code + 2; }
static inline int outlier_code_of_slot(uint64_t v) { return v == 1 ? OUTLIER_RESET : (int)v - 2; }
/* "UNAVAILABLE", or "a reset or lost connection", for logs. */
const char *outlier_failure_name(int code);

#endif
