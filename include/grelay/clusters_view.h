/* GET /clusters: each cluster of the running snapshot, its endpoints with
 * address, weight, health (and why), calls in flight, totals and upstream
 * connections, as JSON (docs/observability.md). Main thread. */
#ifndef GRELAY_CLUSTERS_VIEW_H
#define GRELAY_CLUSTERS_VIEW_H

#include "grelay/sbuf.h"

struct proxy;

void clusters_view_json(struct proxy *p, struct gr_sbuf *out);

#endif
