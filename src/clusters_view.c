/* GET /clusters (clusters_view.h): the running snapshot's clusters, and
 * for each the endpoints the workers' sets hold (E_MEMBER), plus those
 * that left the set but still carry calls or connections ("draining").
 * Figures are the workers' shards summed (stats.h). */
#include "grelay/clusters_view.h"
#include "grelay/breaker.h"
#include "grelay/common.h"
#include "grelay/grpc.h"
#include "grelay/health.h"
#include "grelay/outlier.h"
#include "grelay/proxy.h"
#include "grelay/stats.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>

static const char *const policy_names[] = {"round_robin", "least_request", "random", "ring_hash", "maglev"};
static const char *const discovery_names[] = {"static", "strict_dns", "logical_dns"};

/* Whether the ejection picks see now is the one of failed calls. */
static bool by_calls(const uint64_t *v, uint64_t now)
{
    return v[E_OUTLIER_UNTIL] > now && v[E_OUTLIER_UNTIL] >= v[E_EJECTED_UNTIL];
}

void clusters_view_ejection(char *buf, size_t len, const uint64_t *v, uint64_t now)
{
    double left = (double)(v[E_EJECTED_UNTIL] - now) / 1e6;
    if (by_calls(v, now))
        snprintf(buf, len, "calls in a row failed (consecutive_failures), the last with %s; avoided for %.1f s more",
                 outlier_failure_name(outlier_code_of_slot(v[E_OUTLIER_CODE])), left);
    else
        snprintf(buf, len, "connects failed; avoided for %.1f s more", left);
}

void clusters_view_ejection_json(struct gr_sbuf *out, const uint64_t *v, uint64_t now)
{
    uint64_t left = v[E_EJECTED_UNTIL] - now;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t at_ms = ((uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec + left) / 1000;
    time_t secs = (time_t)(at_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[40];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    sbuf_printf(out, "\"ejection\":{\"reason\":\"%s\",\"until\":\"%s.%03uZ\",\"for_s\":%.3f}",
                by_calls(v, now) ? "consecutive_failures" : "connect_failure", when, (unsigned)(at_ms % 1000),
                (double)left / 1e6);
}

static void endpoint_json(struct gr_sbuf *out, const struct stats_key *k, const uint64_t *v, uint64_t now)
{
    const char *health = "healthy", *why = "";
    char buf[160];
    if (v[E_MEMBER] == 0) {
        health = "draining";
        why = "left the endpoint set; its calls finish";
    } else if (v[E_EJECTED_UNTIL] > now) {
        health = "ejected";
        clusters_view_ejection(buf, sizeof(buf), v, now);
        why = buf;
    } else if (v[E_HC_STATE] == 2) {
        health = "unhealthy";
        health_why(buf, sizeof(buf), (unsigned)v[E_HC_WHY], v[E_HC_FAILS]);
        why = buf;
    }
    uint64_t total = 0;
    for (int c = 0; c < STATS_CODES; c++)
        total += v[E_CODES + c];
    sbuf_puts(out, "{\"address\":");
    sbuf_json_str(out, k->labels[1], strlen(k->labels[1]));
    sbuf_printf(out, ",\"weight\":%llu,\"health\":\"%s\",\"why\":", (unsigned long long)v[E_WEIGHT], health);
    sbuf_json_str(out, why, strlen(why));
    if (v[E_MEMBER] != 0 && v[E_EJECTED_UNTIL] > now) {
        sbuf_puts(out, ",");
        clusters_view_ejection_json(out, v, now);
    }
    if (v[E_HC_STATE] != 0) {
        sbuf_puts(out, ",\"health_checks\":{");
        for (unsigned r = 0; r < HC_RESULTS; r++)
            sbuf_printf(out, "%s\"%s\":%llu", r ? "," : "", health_result_names[r], (unsigned long long)v[E_HC + r]);
        sbuf_puts(out, "}");
    }
    sbuf_printf(out,
                ",\"in_flight\":%lld,\"connections\":%lld,\"requests_total\":%llu,\"connect_failures\":%llu,"
                "\"ejections\":%llu,\"outlier_ejections\":%llu,\"codes\":{",
                (long long)v[E_IN_FLIGHT], (long long)v[E_CONNS], (unsigned long long)total,
                (unsigned long long)v[E_CONNECT_FAILURES], (unsigned long long)v[E_EJECTIONS],
                (unsigned long long)v[E_OUTLIER_EJECTIONS]);
    bool first = true;
    for (int c = 0; c < STATS_CODES; c++)
        if (v[E_CODES + c] != 0) {
            sbuf_printf(out, "%s\"%s\":%llu", first ? "" : ",", grpc_status_name((enum grpc_status)c),
                        (unsigned long long)v[E_CODES + c]);
            first = false;
        }
    sbuf_puts(out, "}}");
}

/* The cluster's breakers: its limits (null when not written), what all
 * workers count now, and the trips. */
static void limits_json(struct gr_sbuf *out, const struct gr_cluster_cfg *cl, const uint64_t *c)
{
    const struct gr_breaker_cfg *cb = &cl->circuit_breakers;
    const struct gr_retry_budget_cfg *rb = &cl->retry_budget;
    struct breaker_counts now = {0};
    (void)breaker_counts_of(cl, &now);
    sbuf_puts(out, ",\"circuit_breakers\":");
    if (cb->set)
        sbuf_printf(out, "{\"max_requests\":%u,\"max_pending\":%u,\"max_retries\":%u}", (unsigned)cb->max_requests,
                    (unsigned)cb->max_pending, (unsigned)cb->max_retries);
    else
        sbuf_puts(out, "null");
    sbuf_puts(out, ",\"retry_budget\":");
    if (rb->set)
        sbuf_printf(out, "{\"percent\":%u,\"min_concurrent\":%u}", (unsigned)rb->percent, (unsigned)rb->min_concurrent);
    else
        sbuf_puts(out, "null");
    sbuf_puts(out, ",");
    breaker_json(out, &now, c + C_BRK_TRIPS);
}

/* ring_hash and maglev: what they hash, and the calls that had no key. */
static void hash_on_json(struct gr_sbuf *out, const struct gr_cluster_cfg *cl, const uint64_t *c)
{
    static const char *const kinds[] = {"", "header", "authority", "peer"};
    if (cl->hash_on.kind == HASH_ON_NONE)
        return;
    sbuf_printf(out, ",\"hash_on\":{\"kind\":\"%s\"", kinds[cl->hash_on.kind]);
    if (cl->hash_on.kind == HASH_ON_HEADER) {
        sbuf_puts(out, ",\"header\":");
        sbuf_json_str(out, cl->hash_on.header, strlen(cl->hash_on.header));
    }
    sbuf_printf(out, "},\"hash_no_key_total\":%llu", (unsigned long long)c[C_HASH_NO_KEY]);
}

static void cluster_json(struct gr_sbuf *out, const struct gr_cluster_cfg *cl)
{
    sbuf_puts(out, "{\"name\":");
    sbuf_json_str(out, cl->name, strlen(cl->name));
    uint64_t c[C_SLOTS] = {0};
    if (cl->stats != NULL)
        stats_sum_key(cl->stats, c, C_SLOTS);
    sbuf_printf(out, ",\"lb_policy\":\"%s\",\"discovery\":\"%s\",\"panic\":%s,\"panic_total\":%llu",
                policy_names[cl->lb_policy], discovery_names[cl->discovery], c[C_PANIC_NOW] ? "true" : "false",
                (unsigned long long)c[C_PANIC]);
    limits_json(out, cl, c);
    hash_on_json(out, cl, c);
    sbuf_puts(out, ",\"endpoints\":[");
    uint64_t now = gr_now_us();
    uint32_t n = stats_key_count();
    bool first = true;
    for (uint32_t id = 0; id < n; id++) {
        const struct stats_key *k = stats_key_at(id);
        if (k == NULL || k->kind != SK_ENDPOINT || strcmp(k->labels[0], cl->name) != 0)
            continue;
        uint64_t v[E_SLOTS];
        stats_sum_key(k, v, E_SLOTS);
        if (v[E_MEMBER] == 0 && v[E_CONNS] == 0 && v[E_IN_FLIGHT] == 0)
            continue; /* gone: its counters stay in /metrics */
        if (!first)
            sbuf_puts(out, ",");
        endpoint_json(out, k, v, now);
        first = false;
    }
    sbuf_puts(out, "]}");
}

void clusters_view_json(struct proxy *p, struct gr_sbuf *out)
{
    const struct gr_config *cfg = proxy_config(p);
    sbuf_puts(out, "{\"clusters\":[");
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (i > 0)
            sbuf_puts(out, ",");
        cluster_json(out, &cfg->clusters[i]);
    }
    sbuf_puts(out, "]}\n");
}
