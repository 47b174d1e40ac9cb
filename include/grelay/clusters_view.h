/* GET /clusters: each cluster of the running snapshot, its endpoints with
 * address, weight, health (and why), calls in flight, totals and upstream
 * connections, as JSON (docs/observability.md). Main thread. */
#ifndef GRELAY_CLUSTERS_VIEW_H
#define GRELAY_CLUSTERS_VIEW_H

#include "grelay/sbuf.h"

#include <stdint.h>

struct proxy;

void clusters_view_json(struct proxy *p, struct gr_sbuf *out);
/* An ejected endpoint (v: its E_SLOTS summed, v[E_EJECTED_UNTIL] > now):
 * why, as text ("3 calls in a row failed, the last with UNAVAILABLE;
 * avoided for 0.8 s more"), and as JSON members ("ejection":{"reason":
 * "consecutive_failures","until":"<UTC time>","for_s":0.8}), for
 * /clusters and /stats.json. */
void clusters_view_ejection(char *buf, size_t len, const uint64_t *v, uint64_t now);
void clusters_view_ejection_json(struct gr_sbuf *out, const uint64_t *v, uint64_t now);

#endif
