/* One health check on the main thread's loop: a connection to an endpoint
 * (TCP, then TLS when the cluster has it), an nghttp2 client session, one
 * grpc.health.v1.Health/Check call, the verdict, the close. Bounded: the
 * answer is read up to HEALTH_PROBE_MAX_BODY bytes, the whole check lasts
 * the cluster's health_check.timeout at most. Used by health.c only
 * (health.h includes it for enum health_result). */
#ifndef GRELAY_HEALTH_PROBE_H
#define GRELAY_HEALTH_PROBE_H

#include "grelay/cluster.h"
#include "grelay/config.h"
#include "grelay/stats.h"

#include <ev.h>

#define HEALTH_PROBE_MAX_BODY 1024

/* What one check found (grelay_health_checks_total{result}). */
enum health_result {
    HC_SERVING,         /* SERVING: a good check */
    HC_NOT_SERVING,     /* NOT_SERVING: failed at once */
    HC_SERVICE_UNKNOWN, /* SERVICE_UNKNOWN: failed at once */
    HC_UNIMPLEMENTED,   /* no health service: logged once, counts as good */
    HC_TIMEOUT,         /* no answer within timeout: toward unhealthy_threshold */
    HC_CONNECT,         /* TCP or TLS connect failed, or the connection was lost */
    HC_ERROR,           /* another grpc-status, a bad :status or a malformed answer */
    HC_RESULTS
};
_Static_assert(HC_RESULTS == STATS_HC_RESULTS, "stats.h reserves one slot per health result");
/* "serving", "not_serving", ... (metric label values). */
extern const char *const health_result_names[HC_RESULTS];

struct health_probe;

/* The verdict; detail says more for logs (a connect error, a grpc-status
 * and message). The probe is freed once it returns. */
typedef void (*health_probe_done)(void *ctx, enum health_result r, const char *detail);

/* Starts a check of ep (copied) with cl's transport and health_check;
 * done is always called later from the loop, never from here. NULL only
 * when out of memory. */
struct health_probe *health_probe_start(struct ev_loop *loop, const struct gr_cluster_cfg *cl,
                                        const struct endpoint *ep, health_probe_done done, void *ctx);
/* Stops a check without its verdict (the endpoint left, a reload). */
void health_probe_cancel(struct health_probe *p);

/* The request body: the gRPC frame of a HealthCheckRequest{service}.
 * Returns its length, or 0 when out does not fit it (outlen bytes). */
size_t health_probe_request(const char *service, uint8_t *out, size_t outlen);
/* The verdict of a response body (gRPC frames, status OK). */
enum health_result health_probe_parse(const uint8_t *body, size_t len);

#endif
