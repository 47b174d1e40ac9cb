/* The admin endpoint's pages and actions (see include/grelay/admin_endpoints.h). */
#include "grelay/admin_endpoints.h"
#include "grelay/admin.h"
#include "grelay/admin_page.h"
#include "grelay/clusters_view.h"
#include "grelay/drain.h"
#include "grelay/log.h"
#include "grelay/access_log.h"
#include "grelay/process_stats.h"
#include "grelay/proxy.h"
#include "grelay/reload.h"
#include "grelay/stats.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT "text/plain; charset=utf-8"
#define JSON "application/json"
/* The longest a test may stall a worker. */
#define STALL_MAX_S 60.0

struct admin_endpoints {
    struct admin *admin;         /* the HTTP server */
    struct gr_config *start_cfg; /* the snapshot loaded at start (a reference): /config_dump before serving */
    struct proxy *p;             /* the workers, once they serve; NULL before and when stopping */
    struct reload *r;            /* POST /reload; NULL likewise */
    struct drain *d;             /* POST /drain; NULL likewise */
    struct sockaddr_storage ss;  /* the address listened on (a reload cannot move it) */
    socklen_t ss_len;            /* its length */
};

/* The value of name in a query "a=1&b=2" into out (cap bytes); false when
 * absent or too long. Values are taken as sent (no percent-decoding: none
 * of the endpoints' values needs it). */
static bool query_get(const char *q, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *s = q; *s != '\0';) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len > nlen && strncmp(s, name, nlen) == 0 && s[nlen] == '=') {
            size_t vlen = len - nlen - 1;
            if (vlen >= cap)
                return false;
            memcpy(out, s + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        s += len + (amp != NULL);
    }
    return false;
}

static void get_ready(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    if (e->p != NULL && drain_ready()) {
        sbuf_puts(out, "ready\n");
        return;
    }
    reply->status = 503;
    sbuf_puts(out, e->p == NULL ? "not ready: the listeners are not up\n" : "not ready: draining\n");
}

static void get_healthz(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    if (e->p == NULL) {
        reply->status = 503;
        sbuf_puts(out, "unhealthy: the workers are not running\n");
        return;
    }
    size_t n;
    struct worker **w = proxy_workers(e->p, &n);
    uint64_t now = gr_now_us();
    size_t stuck = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t beat = atomic_load_explicit(&w[i]->beat_us, memory_order_relaxed);
        if (now > beat && now - beat > ADMIN_HEALTHZ_STALE_US) {
            sbuf_printf(out, "%sworker %u: its loop has not turned for %.1f s\n",
                        stuck ? "" : "unhealthy: stuck workers\n", w[i]->id, (double)(now - beat) / 1e6);
            stuck++;
        }
    }
    if (stuck > 0) {
        reply->status = 503;
        return;
    }
    sbuf_printf(out, "ok: %zu worker%s\n", n, n == 1 ? "" : "s");
}

static void get_metrics(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
    stats_render_prometheus(out);
    sbuf_printf(
        out,
        "# HELP grelay_ready 1 while grelay takes new work (GET /ready says 200); 0 before and while draining.\n"
        "# TYPE grelay_ready gauge\ngrelay_ready %d\n",
        e->p != NULL && drain_ready() ? 1 : 0);
    sbuf_printf(out,
                "# HELP grelay_access_log_lines_total Access log lines buffered for the writer.\n"
                "# TYPE grelay_access_log_lines_total counter\ngrelay_access_log_lines_total %llu\n"
                "# HELP grelay_access_log_dropped_total Access log lines dropped: the writer fell behind.\n"
                "# TYPE grelay_access_log_dropped_total counter\ngrelay_access_log_dropped_total %llu\n",
                (unsigned long long)access_log_lines(), (unsigned long long)access_log_dropped());
    sbuf_printf(out,
                "# HELP grelay_heap_bytes Memory held for calls and TLS (overload.max_heap's figure): payload chunks, "
                "HTTP/2 sessions, call state, OpenSSL; as of each worker's last housekeeping pass.\n"
                "# TYPE grelay_heap_bytes gauge\ngrelay_heap_bytes %llu\n",
                (unsigned long long)worker_heap_total());
    process_stats_render(out);
}

static void get_config_dump(void *ctx, const char *query, const char *body, struct gr_sbuf *out,
                            struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    const struct gr_config *cfg = e->p != NULL ? proxy_config(e->p) : e->start_cfg;
    if (cfg->dump_json == NULL) {
        reply->status = 500;
        sbuf_puts(out, "admin: this snapshot has no dump (out of memory when it loaded)\n");
        return;
    }
    reply->content_type = JSON;
    sbuf_puts(out, cfg->dump_json);
    sbuf_puts(out, "\n");
}

static void get_clusters(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    if (e->p == NULL) {
        reply->status = 503;
        sbuf_puts(out, "admin: the workers are not running\n");
        return;
    }
    reply->content_type = JSON;
    clusters_view_json(e->p, out);
}

static void get_stats_json(void *ctx, const char *query, const char *body, struct gr_sbuf *out,
                           struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    reply->content_type = JSON;
    stats_render_json(out, e->p != NULL && drain_ready());
}

static void get_page(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    size_t len;
    const char *html = admin_page_html(&len);
    reply->content_type = "text/html; charset=utf-8";
    sbuf_add(out, html, len);
}

static void post_reload(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    if (e->r == NULL) {
        reply->status = 503;
        sbuf_puts(out, "reload: not now: grelay is not serving\n");
        return;
    }
    char msg[2560];
    int rc = reload_run(e->r, "POST /reload", msg, sizeof(msg));
    /* A file that does not load is 400 with its file:line:col error, so
     * that `curl --fail` in a deploy script stops on it. */
    reply->status = rc == GR_OK ? 200 : rc == GR_ERR_AGAIN ? 503 : 400;
    sbuf_printf(out, "%s\n", msg);
}

static void post_drain(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    if (e->d == NULL) {
        reply->status = 503;
        sbuf_puts(out, "drain: not now: grelay is not serving\n");
        return;
    }
    bool again = !drain_ready();
    drain_start(e->d, "POST /drain");
    reply->status = 202;
    sbuf_puts(out, again ? "drain: already under way: the calls left are cut now (a third time stops at once)\n"
                         : "drain: begun: not ready now; calls in flight finish (up to drain_timeout), then grelay "
                           "exits\n");
}

static void post_log_level(void *ctx, const char *query, const char *body, struct gr_sbuf *out,
                           struct admin_reply *reply)
{
    char name[16];
    enum log_level lvl;
    if (!query_get(query, "level", name, sizeof(name)) || log_level_parse(name, &lvl) != GR_OK) {
        reply->status = 400;
        sbuf_puts(out, "log_level: want ?level=error, warn, info or debug\n");
        return;
    }
    log_threshold = lvl;
    log_write(LOG_INFO, "admin: log level set to %s (POST /log_level)", name);
    sbuf_printf(out, "log level: %s\n", name);
}

/* Test only (GRELAY_TEST_HOOKS=1): worker N's loop sleeps S seconds. */
static void post_stall(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    struct admin_endpoints *e = ctx;
    char wtext[16], stext[16];
    size_t n = 0;
    struct worker **w = e->p != NULL ? proxy_workers(e->p, &n) : NULL;
    char *end1 = NULL, *end2 = NULL;
    unsigned long id = 0;
    double secs = 0;
    if (query_get(query, "worker", wtext, sizeof(wtext)) && query_get(query, "seconds", stext, sizeof(stext))) {
        id = strtoul(wtext, &end1, 10);
        secs = strtod(stext, &end2);
    }
    if (end1 == NULL || *end1 != '\0' || *end2 != '\0' || wtext[0] == '\0' || id >= n || !(secs > 0) ||
        secs > STALL_MAX_S) {
        reply->status = 400;
        sbuf_printf(out, "stall_worker: want ?worker=0..%zu&seconds=S (0 < S <= %.0f)\n", n ? n - 1 : 0, STALL_MAX_S);
        return;
    }
    worker_test_stall(w[id], (uint32_t)(secs * 1000.0));
    sbuf_printf(out, "worker %lu sleeps %.3g s\n", id, secs);
}

/* A good reload: allow_mutations follows the file; the address does not. */
static void on_reloaded(void *ctx, const struct gr_config *next)
{
    struct admin_endpoints *e = ctx;
    const struct gr_admin_cfg *a = &next->admin;
    admin_set_mutations(e->admin, a->set && a->allow_mutations);
    if (!a->set)
        log_warn("reload: admin: removed from the file; the admin endpoint stays (mutations off) until a restart");
    else if (a->address.len != e->ss_len || memcmp(&a->address.ss, &e->ss, e->ss_len) != 0)
        log_warn("reload: admin: address %s waits for a restart; the admin endpoint stays where it is",
                 a->address.text);
}

struct admin_endpoints *admin_endpoints_start(struct ev_loop *loop, struct gr_config *cfg, char *err, size_t errlen)
{
    struct admin_endpoints *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    e->admin = admin_new(loop, &cfg->admin, err, errlen);
    if (e->admin == NULL) {
        free(e);
        return NULL;
    }
    e->start_cfg = config_ref(cfg);
    memcpy(&e->ss, &cfg->admin.address.ss, sizeof(e->ss));
    e->ss_len = cfg->admin.address.len;
    admin_route(e->admin, "GET", "/ready", get_ready, e);
    admin_route(e->admin, "GET", "/healthz", get_healthz, e);
    admin_route(e->admin, "GET", "/metrics", get_metrics, e);
    admin_route(e->admin, "GET", "/config_dump", get_config_dump, e);
    admin_route(e->admin, "GET", "/clusters", get_clusters, e);
    admin_route(e->admin, "GET", "/stats.json", get_stats_json, e);
    admin_route(e->admin, "GET", "/", get_page, e);
    admin_route(e->admin, "POST", "/reload", post_reload, e);
    admin_route(e->admin, "POST", "/drain", post_drain, e);
    admin_route(e->admin, "POST", "/log_level", post_log_level, e);
    const char *hooks = getenv("GRELAY_TEST_HOOKS");
    if (hooks != NULL && strcmp(hooks, "1") == 0) {
        admin_route(e->admin, "POST", "/test/stall_worker", post_stall, e);
        log_warn("admin: GRELAY_TEST_HOOKS=1: POST /test/stall_worker is on (tests only)");
    }
    log_info("admin: listening on %s (mutations %s)", cfg->admin.address.text,
             cfg->admin.allow_mutations ? "allowed" : "off");
    return e;
}

void admin_endpoints_serving(struct admin_endpoints *e, struct proxy *p, struct reload *r, struct drain *d)
{
    e->p = p;
    e->r = r;
    e->d = d;
    if (r != NULL)
        reload_on_done(r, on_reloaded, e);
}

int admin_endpoints_fd(const struct admin_endpoints *e) { return admin_fd(e->admin); }

void admin_endpoints_free(struct admin_endpoints *e)
{
    if (e == NULL)
        return;
    admin_free(e->admin);
    config_unref(e->start_cfg);
    free(e);
}
