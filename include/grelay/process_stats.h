/* Prometheus' standard process metrics (process_cpu_seconds_total,
 * process_resident_memory_bytes, ...), read from /proc/self and
 * getrlimit when GET /metrics asks. Main thread. */
#ifndef GRELAY_PROCESS_STATS_H
#define GRELAY_PROCESS_STATS_H

#include "grelay/sbuf.h"

/* Appends each metric with its HELP and TYPE lines (exposition format
 * 0.0.4); a metric whose source cannot be read is left out. */
void process_stats_render(struct gr_sbuf *out);

#endif
