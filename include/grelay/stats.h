/* Metrics: counters, gauges and histograms, in per-worker shards written
 * without locks or atomic read-modify-writes on the data path, merged when
 * read (the admin endpoint, on the main thread).
 *
 * A series is named by a key: its family and its label values, interned
 * once in a process-wide registry (a mutex, taken off the data path: at
 * config load, when a pool starts, and when a worker meets a (route,
 * method) pair for the first time). A key never goes away, so counters
 * survive reloads: a route that stays keeps its series. Each worker holds
 * a block of counters per key it has used, created on first use and read
 * by the main thread with relaxed loads. The registry is bounded
 * (STATS_MAX_KEYS; gr_stats_cfg.max_methods for methods): past it, series
 * fall into "other". docs/observability.md lists every metric. */
#ifndef GRELAY_STATS_H
#define GRELAY_STATS_H

#include "grelay/config_types.h"
#include "grelay/sbuf.h"

#include <stdbool.h>
#include <stdint.h>

struct stats_shard;

/* Fixes the histogram buckets and max_methods from the first snapshot
 * (a reload that changes them is told they wait for a restart). Main
 * thread, before any worker starts; returns GR_OK or GR_ERR_NOMEM. */
int stats_init(const struct gr_config *cfg);
/* Interns the keys of cfg's listeners and routes (gr_listener_cfg.stats,
 * gr_route_cfg.stats): before any worker uses cfg (load and reload). */
void stats_bind(struct gr_config *cfg);
/* A worker's shard (worker_init); freed at exit by stats_shard_free. */
struct stats_shard *stats_shard_new(uint32_t worker_id);
void stats_shard_free(struct stats_shard *sh);

/* A reload ended (reload.c): grelay_config_reloads_total{result}. */
void stats_reload_result(bool ok);

/* Every metric of every shard, merged, in the Prometheus text format
 * 0.0.4 (without the process_* metrics: the admin endpoint adds those). */
void stats_render_prometheus(struct gr_sbuf *out);
/* The same as JSON for the live view (docs/observability.md, /stats.json). */
void stats_render_json(struct gr_sbuf *out);

#endif
