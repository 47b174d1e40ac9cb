/* Metrics as read (stats.h): every shard merged into the Prometheus text
 * format 0.0.4, or into the live view's JSON. Main thread. Every key is
 * written, zeros included, so that a route's or listener's series exist
 * from the start (rate() needs a first sample); a key of a removed route
 * keeps its last values. Only per-code counters are left out at zero. */
#include "grelay/breaker.h"
#include "grelay/common.h"
#include "grelay/grpc.h"
#include "grelay/health.h"
#include "grelay/clusters_view.h"
#include "grelay/stats.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define MAX_SLOTS 128 /* above every kind's slot count */

static const char *const label_names[SK_KINDS][5] = {
    [SK_LISTENER] = {"listener"},
    [SK_ROUTE] = {"listener", "route", "cluster"},
    [SK_CALL] = {"listener", "route", "cluster", "grpc_service", "grpc_method"},
    [SK_ENDPOINT] = {"cluster", "endpoint"},
    [SK_CLUSTER] = {"cluster"},
};
static const size_t n_label_names[SK_KINDS] = {1, 3, 5, 2, 1};

static const char *const limit_names[LIMIT_KINDS] = {
    [LIMIT_MAX_CONNECTIONS] = "max_connections",
    [LIMIT_HEADERS] = "max_request_headers",
    [LIMIT_CONNECTION_BUFFER] = "connection_buffer",
    [LIMIT_STREAM_WRITE_TIMEOUT] = "stream_write_timeout",
    [LIMIT_GLITCHES] = "abuse",
    [LIMIT_OVERLOAD] = "overload",
    [LIMIT_IDLE_TIMEOUT] = "idle_timeout",
    [LIMIT_HEADERS_TIMEOUT] = "request_headers_timeout",
    [LIMIT_RATE] = "rate_limit",
};

/* One merged series group: its key and its slots summed over shards. */
struct row {
    const struct stats_key *k;
    uint64_t v[MAX_SLOTS];
};

/* Every key of kind, summed (rows allocated; *n set). NULL when none. */
static struct row *rows_of(enum stats_kind kind, size_t *n)
{
    uint32_t nk = stats_key_count();
    size_t slots = stats_slots(kind), cap = 16, m = 0;
    struct row *rows = malloc(cap * sizeof(*rows));
    for (uint32_t id = 0; rows != NULL && id < STATS_MAX_KEYS; id++) {
        if (id == nk)
            id = STATS_MAX_KEYS - SK_KINDS; /* then the overflow keys */
        const struct stats_key *k = stats_key_at(id);
        if (k == NULL || k->kind != kind)
            continue;
        if (m == cap) {
            struct row *r = realloc(rows, 2 * cap * sizeof(*rows));
            if (r == NULL)
                break;
            rows = r;
            cap *= 2;
        }
        rows[m].k = k;
        stats_sum_key(k, rows[m].v, slots);
        bool any = id < STATS_MAX_KEYS - SK_KINDS; /* an overflow key only once used */
        for (size_t i = 0; i < slots && !any; i++)
            any = rows[m].v[i] != 0;
        if (any)
            m++;
    }
    *n = m;
    return rows;
}

static void labels(struct gr_sbuf *out, const struct stats_key *k, size_t skip_to, const char *extra_name,
                   const char *extra_value)
{
    sbuf_puts(out, "{");
    bool first = true;
    for (size_t i = 0; i < n_label_names[k->kind] && i < skip_to; i++) {
        sbuf_printf(out, "%s%s=\"", first ? "" : ",", label_names[k->kind][i]);
        sbuf_label(out, k->labels[i]);
        sbuf_puts(out, "\"");
        first = false;
    }
    if (extra_name != NULL) {
        sbuf_printf(out, "%s%s=\"", first ? "" : ",", extra_name);
        sbuf_label(out, extra_value);
        sbuf_puts(out, "\"");
    }
    sbuf_puts(out, "}");
}

static void head(struct gr_sbuf *out, const char *name, const char *type, const char *help)
{
    sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One family from one slot of every row (a gauge may be negative for a
 * moment on a shard: it is summed as signed). */
static void family(struct gr_sbuf *out, const struct row *rows, size_t n, const char *name, const char *type,
                   const char *help, unsigned slot, const char *extra_name, const char *extra_value)
{
    head(out, name, type, help);
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(out, name);
        labels(out, rows[i].k, 5, extra_name, extra_value);
        sbuf_printf(out, " %lld\n", (long long)rows[i].v[slot]);
    }
}

/* Series of one family spread over several slots, one label value each. */
static void family_split(struct gr_sbuf *out, const struct row *rows, size_t n, const char *name, const char *type,
                         const char *help, const char *label, const unsigned *slots, const char *const *values,
                         size_t nv, bool skip_zero)
{
    head(out, name, type, help);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nv; j++) {
            if (skip_zero && rows[i].v[slots[j]] == 0)
                continue;
            sbuf_puts(out, name);
            labels(out, rows[i].k, 5, label, values[j]);
            sbuf_printf(out, " %lld\n", (long long)rows[i].v[slots[j]]);
        }
}

static void codes_family(struct gr_sbuf *out, const struct row *rows, size_t n, const char *name, const char *help,
                         unsigned first)
{
    unsigned slots[STATS_CODES];
    const char *names[STATS_CODES];
    for (unsigned c = 0; c < STATS_CODES; c++) {
        slots[c] = first + c;
        names[c] = grpc_status_name((enum grpc_status)c);
    }
    family_split(out, rows, n, name, "counter", help, "grpc_code", slots, names, STATS_CODES, true);
}

static void histogram(struct gr_sbuf *out, const struct row *rows, size_t n)
{
    size_t nb;
    const double *b = stats_buckets(&nb);
    const char *name = "grelay_request_duration_seconds";
    head(out, name, "histogram", "Calls from request headers to the last response byte, in seconds.");
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (size_t j = 0; j <= nb; j++) {
            cum += rows[i].v[STATS_CALL_BUCKETS + j];
            char le[32];
            if (j < nb)
                snprintf(le, sizeof(le), "%g", b[j]);
            else
                snprintf(le, sizeof(le), "+Inf");
            sbuf_printf(out, "%s_bucket", name);
            labels(out, rows[i].k, 5, "le", le);
            sbuf_printf(out, " %llu\n", (unsigned long long)cum);
        }
        sbuf_printf(out, "%s_sum", name);
        labels(out, rows[i].k, 5, NULL, NULL);
        sbuf_printf(out, " %.6f\n", (double)rows[i].v[stats_call_sum_slot(nb)] / 1e6);
        sbuf_printf(out, "%s_count", name);
        labels(out, rows[i].k, 5, NULL, NULL);
        sbuf_printf(out, " %llu\n", (unsigned long long)cum);
    }
}

static void listener_families(struct gr_sbuf *out, const struct row *r, size_t n)
{
    static const char *const protos[2] = {"h2", "http1"};
    static const unsigned conns[2] = {L_CONNS_H2, L_CONNS_H1}, totals[2] = {L_CONNS_TOTAL_H2, L_CONNS_TOTAL_H1};
    static const char *const modes[2] = {"binary", "text"};
    static const unsigned web[2] = {L_GRPC_WEB, L_GRPC_WEB_TEXT};
    family(out, r, n, "grelay_requests_in_flight", "gauge", "Calls in flight.", L_IN_FLIGHT, NULL, NULL);
    family_split(out, r, n, "grelay_downstream_connections", "gauge", "Client connections open.", "protocol", conns,
                 protos, 2, false);
    family_split(out, r, n, "grelay_downstream_connections_total", "counter", "Client connections accepted.",
                 "protocol", totals, protos, 2, false);
    family(out, r, n, "grelay_hibernated_connections", "gauge",
           "Idle HTTP/2 client connections whose session is freed.", L_HIBERNATED, NULL, NULL);
    family(out, r, n, "grelay_hibernations_total", "counter", "Times an idle connection's session was freed.",
           L_HIBERNATIONS, NULL, NULL);
    family_split(out, r, n, "grelay_grpc_web_requests_total", "counter", "gRPC-Web calls, by encoding.", "mode", web,
                 modes, 2, false);
    family(out, r, n, "grelay_cors_preflights_total", "counter", "CORS preflight requests answered.", L_PREFLIGHTS,
           NULL, NULL);
    family(out, r, n, "grelay_drained_connections_total", "counter",
           "Client connections told to drain (connection age, request count, reload, shutdown).", L_DRAINED_CONNS, NULL,
           NULL);
    unsigned slots[LIMIT_KINDS];
    for (unsigned i = 0; i < LIMIT_KINDS; i++)
        slots[i] = L_LIMITS + i;
    family_split(out, r, n, "grelay_limit_hits_total", "counter", "Times a client ran into a limit, by limit.", "limit",
                 slots, limit_names, LIMIT_KINDS, true);
}

/* Circuit breakers: trips per limit (workers' shards), and the counts
 * now, shared by the workers (breaker.h), of clusters a snapshot names. */
static void breaker_families(struct gr_sbuf *out, const struct row *r, size_t n)
{
    unsigned slots[BREAKER_LIMITS];
    for (unsigned i = 0; i < BREAKER_LIMITS; i++)
        slots[i] = C_BRK_TRIPS + i;
    family_split(out, r, n, "grelay_circuit_breaker_trips_total", "counter",
                 "Calls and configured retries a cluster's circuit breakers or retry budget refused, by limit.",
                 "limit", slots, breaker_limit_names, BREAKER_LIMITS, false);
    static const char *const names[3] = {"grelay_cluster_active_requests", "grelay_cluster_pending_requests",
                                         "grelay_cluster_active_retries"};
    static const char *const helps[3] = {"Calls of a cluster in flight, all workers (max_requests).",
                                         "Calls of a cluster waiting in its pools' lines for a stream slot "
                                         "(max_pending).",
                                         "Configured retries of a cluster in flight (max_retries, retry_budget)."};
    for (int g = 0; g < 3; g++) {
        head(out, names[g], "gauge", helps[g]);
        for (size_t i = 0; i < n; i++) {
            struct breaker_counts c;
            if (!breaker_counts_by_name(r[i].k->labels[0], &c))
                continue;
            sbuf_puts(out, names[g]);
            labels(out, r[i].k, 5, NULL, NULL);
            sbuf_printf(out, " %u\n", (unsigned)(g == 0 ? c.requests : g == 1 ? c.pending : c.retries));
        }
    }
}

static void endpoint_families(struct gr_sbuf *out, const struct row *r, size_t n)
{
    codes_family(out, r, n, "grelay_upstream_requests_total", "Attempts sent to an endpoint, by the status they got.",
                 E_CODES);
    family(out, r, n, "grelay_upstream_requests_in_flight", "gauge", "Attempts in flight to an endpoint.", E_IN_FLIGHT,
           NULL, NULL);
    family(out, r, n, "grelay_upstream_connections", "gauge", "Upstream connections open or connecting.", E_CONNS, NULL,
           NULL);
    family(out, r, n, "grelay_upstream_connect_failures_total", "counter", "Upstream connections that failed.",
           E_CONNECT_FAILURES, NULL, NULL);
    static const unsigned ej_slots[] = {E_EJECTIONS, E_OUTLIER_EJECTIONS};
    static const char *const ej_reasons[] = {"connect_failure", "consecutive_failures"};
    family_split(out, r, n, "grelay_upstream_ejections_total", "counter",
                 "Times an endpoint was ejected (per worker), by reason: failed connects or failed calls.", "reason",
                 ej_slots, ej_reasons, 2, false);
    head(out, "grelay_upstream_ejected", "gauge",
         "1 while some worker avoids the endpoint after failed connects or failed calls.");
    uint64_t now = gr_now_us();
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(out, "grelay_upstream_ejected");
        labels(out, r[i].k, 5, NULL, NULL);
        sbuf_printf(out, " %d\n", r[i].v[E_EJECTED_UNTIL] > now ? 1 : 0);
    }
    unsigned hc[HC_RESULTS];
    for (unsigned i = 0; i < HC_RESULTS; i++)
        hc[i] = E_HC + i;
    family_split(out, r, n, "grelay_health_checks_total", "counter", "Active health checks, by result.", "result", hc,
                 health_result_names, HC_RESULTS, true);
    head(out, "grelay_endpoint_healthy", "gauge",
         "1 while an endpoint passes its cluster's health checks, 0 while it fails them (checked endpoints only).");
    for (size_t i = 0; i < n; i++) {
        if (r[i].v[E_HC_STATE] == 0)
            continue;
        sbuf_puts(out, "grelay_endpoint_healthy");
        labels(out, r[i].k, 5, NULL, NULL);
        sbuf_printf(out, " %d\n", r[i].v[E_HC_STATE] == 1 ? 1 : 0);
    }
}

void stats_render_prometheus(struct gr_sbuf *out)
{
    size_t n;
    struct row *r = rows_of(SK_CALL, &n);
    codes_family(out, r, n, "grelay_requests_total", "Calls, by the gRPC status the client got.", 0);
    histogram(out, r, n);
    free(r);
    r = rows_of(SK_LISTENER, &n);
    listener_families(out, r, n);
    free(r);
    r = rows_of(SK_ROUTE, &n);
    static const char *const kinds[2] = {"transparent", "configured"};
    static const unsigned retry_slots[2] = {R_RETRY_TRANS, R_RETRY_CONF};
    family(out, r, n, "grelay_route_requests_in_flight", "gauge", "Calls in flight on a route.", R_IN_FLIGHT, NULL,
           NULL);
    family_split(out, r, n, "grelay_retries_total", "counter", "Retries, by kind.", "kind", retry_slots, kinds, 2,
                 false);
    family(out, r, n, "grelay_route_rate_limited_total", "counter", "Calls refused by the route's rate_limit.",
           R_RATE_LIMITED, NULL, NULL);
    free(r);
    r = rows_of(SK_ENDPOINT, &n);
    endpoint_families(out, r, n);
    free(r);
    r = rows_of(SK_CLUSTER, &n);
    static const char *const results[2] = {"success", "failure"};
    static const unsigned dns_slots[2] = {C_DNS_OK, C_DNS_FAIL};
    family_split(out, r, n, "grelay_dns_resolutions_total", "counter", "DNS lookups of a cluster, by result.", "result",
                 dns_slots, results, 2, false);
    family(out, r, n, "grelay_no_endpoint_total", "counter", "Calls failed because a cluster had no endpoint.",
           C_NO_ENDPOINT, NULL, NULL);
    family(out, r, n, "grelay_cluster_panic_total", "counter",
           "Attempts balanced over every endpoint because fewer than panic_threshold were healthy.", C_PANIC, NULL,
           NULL);
    family(out, r, n, "grelay_cluster_panic", "gauge",
           "1 while fewer than panic_threshold of the endpoints are healthy.", C_PANIC_NOW, NULL, NULL);
    breaker_families(out, r, n);
    family(out, r, n, "grelay_cluster_hash_no_key_total", "counter",
           "Attempts of a ring_hash or maglev cluster whose call had no key (picked at random).", C_HASH_NO_KEY, NULL,
           NULL);
    free(r);
    head(out, "grelay_config_reloads_total", "counter", "Configuration reloads, by result.");
    sbuf_printf(out, "grelay_config_reloads_total{result=\"success\"} %llu\n",
                (unsigned long long)atomic_load(&stats_reloads[1]));
    sbuf_printf(out, "grelay_config_reloads_total{result=\"failure\"} %llu\n",
                (unsigned long long)atomic_load(&stats_reloads[0]));
}

/* ---- JSON for the live view ---- */

static void json_labels(struct gr_sbuf *out, const struct stats_key *k)
{
    for (size_t i = 0; i < n_label_names[k->kind]; i++) {
        sbuf_printf(out, "\"%s\":",
                    strcmp(label_names[k->kind][i], "grpc_service") == 0  ? "service"
                    : strcmp(label_names[k->kind][i], "grpc_method") == 0 ? "method"
                                                                          : label_names[k->kind][i]);
        sbuf_json_str(out, k->labels[i], strlen(k->labels[i]));
        sbuf_puts(out, ",");
    }
}

static void json_codes(struct gr_sbuf *out, const uint64_t *v)
{
    sbuf_puts(out, "\"codes\":{");
    bool first = true;
    for (int c = 0; c < STATS_CODES; c++)
        if (v[c] != 0) {
            sbuf_printf(out, "%s\"%s\":%llu", first ? "" : ",", grpc_status_name((enum grpc_status)c),
                        (unsigned long long)v[c]);
            first = false;
        }
    sbuf_puts(out, "}");
}

static void json_calls(struct gr_sbuf *out)
{
    size_t n, nb;
    stats_buckets(&nb);
    struct row *r = rows_of(SK_CALL, &n);
    sbuf_puts(out, "\"calls\":[");
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(out, i ? ",{" : "{");
        json_labels(out, r[i].k);
        json_codes(out, r[i].v);
        uint64_t cum = 0;
        sbuf_puts(out, ",\"counts\":[");
        for (size_t j = 0; j <= nb; j++) {
            cum += r[i].v[STATS_CALL_BUCKETS + j];
            sbuf_printf(out, "%s%llu", j ? "," : "", (unsigned long long)cum);
        }
        sbuf_printf(out, "],\"count\":%llu,\"sum\":%.6f}", (unsigned long long)cum,
                    (double)r[i].v[stats_call_sum_slot(nb)] / 1e6);
    }
    sbuf_puts(out, "]");
    free(r);
}

static void json_listeners_routes(struct gr_sbuf *out)
{
    size_t n;
    struct row *r = rows_of(SK_LISTENER, &n);
    sbuf_puts(out, ",\"listeners\":[");
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(out, i ? ",{" : "{");
        json_labels(out, r[i].k);
        const uint64_t *v = r[i].v;
        sbuf_printf(out,
                    "\"in_flight\":%lld,\"connections\":{\"h2\":%lld,\"http1\":%lld},"
                    "\"connections_total\":{\"h2\":%llu,\"http1\":%llu},\"hibernated\":%lld}",
                    (long long)v[L_IN_FLIGHT], (long long)v[L_CONNS_H2], (long long)v[L_CONNS_H1],
                    (unsigned long long)v[L_CONNS_TOTAL_H2], (unsigned long long)v[L_CONNS_TOTAL_H1],
                    (long long)v[L_HIBERNATED]);
    }
    free(r);
    r = rows_of(SK_ROUTE, &n);
    sbuf_puts(out, "],\"routes\":[");
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(out, i ? ",{" : "{");
        json_labels(out, r[i].k);
        sbuf_printf(out,
                    "\"in_flight\":%lld,\"retries\":{\"transparent\":%llu,\"configured\":%llu},"
                    "\"rate_limited\":%llu}",
                    (long long)r[i].v[R_IN_FLIGHT], (unsigned long long)r[i].v[R_RETRY_TRANS],
                    (unsigned long long)r[i].v[R_RETRY_CONF], (unsigned long long)r[i].v[R_RATE_LIMITED]);
    }
    sbuf_puts(out, "]");
    free(r);
}

static void json_endpoints(struct gr_sbuf *out)
{
    size_t n;
    struct row *r = rows_of(SK_ENDPOINT, &n);
    uint64_t now = gr_now_us();
    sbuf_puts(out, ",\"endpoints\":[");
    for (size_t i = 0; i < n; i++) {
        const uint64_t *v = r[i].v;
        bool ejected = v[E_EJECTED_UNTIL] > now, unhealthy = v[E_HC_STATE] == 2;
        sbuf_puts(out, i ? ",{" : "{");
        json_labels(out, r[i].k);
        char why[160] = "";
        if (ejected)
            clusters_view_ejection(why, sizeof(why), v, now);
        else if (unhealthy)
            health_why(why, sizeof(why), (unsigned)v[E_HC_WHY], v[E_HC_FAILS]);
        sbuf_printf(out, "\"health\":\"%s\",\"why\":\"%s\",",
                    ejected     ? "ejected"
                    : unhealthy ? "unhealthy"
                                : "healthy",
                    why);
        if (ejected) {
            clusters_view_ejection_json(out, v, now);
            sbuf_puts(out, ",");
        }
        json_codes(out, v + E_CODES);
        sbuf_printf(out,
                    ",\"in_flight\":%lld,\"connections\":%lld,\"connect_failures\":%llu,\"ejections\":%llu,"
                    "\"outlier_ejections\":%llu}",
                    (long long)v[E_IN_FLIGHT], (long long)v[E_CONNS], (unsigned long long)v[E_CONNECT_FAILURES],
                    (unsigned long long)v[E_EJECTIONS], (unsigned long long)v[E_OUTLIER_EJECTIONS]);
    }
    sbuf_puts(out, "]");
    free(r);
}

/* Each cluster's breakers (counts now and trips), its panic and its
 * calls without a hash key (the live view). */
static void json_clusters(struct gr_sbuf *out)
{
    size_t n;
    struct row *r = rows_of(SK_CLUSTER, &n);
    sbuf_puts(out, ",\"clusters\":[");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        struct breaker_counts c;
        if (!breaker_counts_by_name(r[i].k->labels[0], &c))
            continue; /* no snapshot names it any more */
        sbuf_puts(out, first ? "{" : ",{");
        first = false;
        json_labels(out, r[i].k);
        breaker_json(out, &c, r[i].v + C_BRK_TRIPS);
        sbuf_printf(out, ",\"panic\":%s,\"panic_total\":%llu,\"hash_no_key\":%llu}",
                    r[i].v[C_PANIC_NOW] ? "true" : "false", (unsigned long long)r[i].v[C_PANIC],
                    (unsigned long long)r[i].v[C_HASH_NO_KEY]);
    }
    sbuf_puts(out, "]");
    free(r);
}

void stats_render_json(struct gr_sbuf *out, bool ready)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    size_t nb;
    const double *b = stats_buckets(&nb);
    sbuf_printf(out, "{\"time\":%.3f,\"start_time\":%.3f,\"ready\":%s,\"draining\":%s,",
                (double)tv.tv_sec + (double)tv.tv_usec / 1e6, stats_start_time, ready ? "true" : "false",
                ready ? "false" : "true");
    sbuf_printf(out, "\"reloads\":{\"success\":%llu,\"failure\":%llu},\"buckets\":[",
                (unsigned long long)atomic_load(&stats_reloads[1]), (unsigned long long)atomic_load(&stats_reloads[0]));
    for (size_t i = 0; i < nb; i++)
        sbuf_printf(out, "%s%g", i ? "," : "", b[i]);
    sbuf_puts(out, "],");
    json_calls(out);
    json_listeners_routes(out);
    json_endpoints(out);
    json_clusters(out);
    sbuf_puts(out, "}");
}
