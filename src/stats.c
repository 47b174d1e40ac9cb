/* Metrics (stats.h). First step: the process-wide counters; the per-call
 * series follow. */
#include "grelay/stats.h"
#include "grelay/common.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic uint64_t reloads[2]; /* grelay_config_reloads_total: failure, success */

int stats_init(const struct gr_config *cfg)
{
    (void)cfg;
    return GR_OK;
}

void stats_bind(struct gr_config *cfg) { (void)cfg; }

struct stats_shard *stats_shard_new(uint32_t worker_id)
{
    (void)worker_id;
    return NULL;
}

void stats_shard_free(struct stats_shard *sh) { (void)sh; }

void stats_reload_result(bool ok) { atomic_fetch_add(&reloads[ok ? 1 : 0], 1); }

void stats_render_prometheus(struct gr_sbuf *out)
{
    sbuf_puts(out, "# HELP grelay_config_reloads_total Configuration reloads, by result.\n"
                   "# TYPE grelay_config_reloads_total counter\n");
    sbuf_printf(out, "grelay_config_reloads_total{result=\"success\"} %llu\n",
                (unsigned long long)atomic_load(&reloads[1]));
    sbuf_printf(out, "grelay_config_reloads_total{result=\"failure\"} %llu\n",
                (unsigned long long)atomic_load(&reloads[0]));
}

void stats_render_json(struct gr_sbuf *out) { sbuf_puts(out, "{}"); }
