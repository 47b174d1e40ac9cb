/* grelay: flags, signals, start and stop. */
#include "grelay/access_log.h"
#include "grelay/admin.h"
#include "grelay/admin_endpoints.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/dns.h"
#include "grelay/health.h"
#include "grelay/drain.h"
#include "grelay/log.h"
#include "grelay/mem.h"
#include "grelay/proxy.h"
#include "grelay/reload.h"
#include "grelay/sd_notify.h"
#include "grelay/stats.h"
#include "grelay/upgrade.h"

#include <ev.h>
#include <getopt.h>
#include <malloc.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out, "Usage: grelay --config FILE [--check] [--log-level LEVEL]\n"
                 "\n"
                 "An HTTP/2 gRPC proxy and load balancer.\n"
                 "\n"
                 "  -c, --config FILE     YAML configuration (see conf/ and README.md)\n"
                 "      --check           validate FILE, print what is wrong, exit 0 (valid) or 1\n"
                 "  -l, --log-level LVL   error, warn, info or debug (overrides log_level in FILE)\n"
                 "  -V, --version         print the version and exit\n"
                 "  -h, --help            print this help and exit\n"
                 "\n"
                 "SIGINT or SIGTERM drains it: calls in flight finish (up to drain_timeout), then it exits;\n"
                 "a second one cuts what is left. SIGHUP reloads FILE (docs/reload.md). SIGUSR2 starts\n"
                 "this binary again with the listening sockets handed over; once the new process serves,\n"
                 "this one drains (a binary upgrade, docs/lifecycle.md). SIGUSR1 reopens the access log\n"
                 "file (logrotate, docs/access-log.md).\n");
}

/* SIGINT, SIGTERM: the drain (w->data), which ends the loop once done. */
static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    char why[32];
    snprintf(why, sizeof(why), "signal %d", w->signum);
    /* Not after an upgrade: the new process is systemd's main one now. */
    if (drain_ready())
        sd_notify_send("STOPPING=1");
    if (w->data != NULL) {
        drain_start(w->data, why);
        return;
    }
    log_info("%s: stopping (out of memory for a drain)", why);
    ev_break(loop, EVBREAK_ALL);
}

/* SIGHUP: load the file again (reload.c); a bad file changes nothing. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    reload_now(w->data, "SIGHUP");
}

/* SIGUSR1: the access log's writer opens its file again (logrotate moved it). */
static void on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    access_log_reopen(); /* first: a line after the log says so goes to the new file */
    log_info("SIGUSR1: reopening the access log");
}

/* The main loop's state for SIGUSR2. */
struct main_state {
    struct proxy *p;               /* the workers */
    struct drain *drain;           /* the drain SIGTERM starts, and a finished upgrade */
    struct admin_endpoints *admin; /* the admin endpoint (its socket is handed over too), or NULL */
    struct upgrade up;             /* a binary upgrade under way */
};

/* The new process serves: this one drains, as on SIGTERM. */
static void on_upgraded(struct upgrade *u)
{
    struct main_state *m = container_of(u, struct main_state, up);
    if (m->drain != NULL)
        drain_start(m->drain, "binary upgrade");
    else
        ev_break(u->loop, EVBREAK_ALL);
}

/* SIGUSR2: start the binary again with our listening sockets (upgrade.c). */
static void on_upgrade(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct main_state *m = w->data;
    if (!drain_ready()) {
        log_warn("upgrade: SIGUSR2 ignored: this process is draining");
        return;
    }
    struct upgrade_sock socks[1024];
    size_t n = proxy_listen_socks(m->p, socks, sizeof(socks) / sizeof(socks[0]) - 1);
    if (m->admin != NULL)
        socks[n++] = (struct upgrade_sock){ADMIN_UPGRADE_NAME, admin_endpoints_fd(m->admin)};
    char err[256];
    m->up.on_ready = on_upgraded;
    if (upgrade_start(&m->up, loop, socks, n, err, sizeof(err)) != GR_OK)
        log_error("upgrade: %s", err);
}

/* What the command line asks for. */
struct args {
    const char *config_path; /* --config FILE */
    const char *level;       /* --log-level, or NULL */
    bool check;              /* --check: validate and exit */
};

/* Parses argv; returns -1 to go on, or the exit status (help, version,
 * usage errors). */
static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->config_path = optarg; break;
        case 'k': a->check = true; break;
        case 'l': a->level = optarg; break;
        case 'V':
            printf("grelay %s (nghttp2 %s, libev %d.%d)\n", GRELAY_VERSION, nghttp2_version(0)->version_str,
                   ev_version_major(), ev_version_minor());
            return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "grelay: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (a->config_path == NULL) {
        fprintf(stderr, "grelay: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    return -1;
}

/* Runs the main loop (signals, DNS, the admin endpoint) until a SIGINT or
 * SIGTERM drain ends. The signal watchers start while the signals are
 * still blocked, so no signal can arrive before grelay is ready to stop
 * cleanly. */
static void run_main_loop(struct ev_loop *loop, struct gr_config *cfg, struct proxy *p, struct admin_endpoints *admin,
                          const sigset_t *old, bool level_forced)
{
    ev_signal sigint, sigterm;
    ev_signal_init(&sigint, on_signal, SIGINT);
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    struct drain *drain = drain_new(loop, p);
    sigint.data = sigterm.data = drain;
    struct main_state m = {.p = p, .drain = drain, .admin = admin, .up = {.ready_fd = -1}};
    ev_signal sigusr2, sigusr1;
    ev_signal_init(&sigusr2, on_upgrade, SIGUSR2);
    sigusr2.data = &m;
    ev_signal_init(&sigusr1, on_sigusr1, SIGUSR1);
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigusr2);
    ev_signal_start(loop, &sigusr1);
    pthread_sigmask(SIG_SETMASK, old, NULL);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        log_info("listener %s on %s", cfg->listeners[i].name, cfg->listeners[i].address.text);
    log_info("grelay %s running with %u worker%s", GRELAY_VERSION, cfg->workers, cfg->workers == 1 ? "" : "s");
    size_t n;
    struct worker **workers = proxy_workers(p, &n);
    struct health *health = health_start(cfg, workers, n, loop);
    struct dns_sink sink = {health != NULL ? health_publish : NULL, health};
    struct dns *dns = dns_start(cfg, workers, n, loop, sink);
    struct reload *reload = reload_new(cfg, p, &dns, &health, loop, level_forced);
    ev_signal sighup;
    ev_signal_init(&sighup, on_sighup, SIGHUP);
    sighup.data = reload;
    if (reload != NULL)
        ev_signal_start(loop, &sighup);
    else
        log_error("out of memory: SIGHUP will not reload");
    if (admin != NULL)
        admin_endpoints_serving(admin, p, reload, drain); /* GET /ready says 200 from now on */
    /* Serving: tell the process this one upgrades (it drains now), and systemd. */
    char ready[64];
    snprintf(ready, sizeof(ready), "MAINPID=%d\nREADY=1", (int)getpid());
    sd_notify_send(upgrade_ready() ? ready : "READY=1");
    ev_run(loop, 0);
    /* The drain is over and grelay exits 0: a signal that comes now (a
     * second SIGTERM from a supervisor, say) stays pending instead of
     * meeting the default action the watchers' stop puts back. */
    sigset_t late;
    sigemptyset(&late);
    int late_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(late_signals) / sizeof(late_signals[0]); i++)
        sigaddset(&late, late_signals[i]);
    pthread_sigmask(SIG_BLOCK, &late, NULL);
    if (admin != NULL)
        admin_endpoints_serving(admin, NULL, NULL, NULL);
    upgrade_stop(&m.up);
    ev_signal_stop(loop, &sigusr2);
    ev_signal_stop(loop, &sigusr1);
    ev_signal_stop(loop, &sighup);
    dns_stop(dns);
    health_stop(health);
    reload_free(reload);
    drain_free(drain);
    ev_signal_stop(loop, &sigint);
    ev_signal_stop(loop, &sigterm);
}

/* Starts the workers after one malloc_trim: their first calls of it
 * (worker.c, when quiet) may come at once, and under AddressSanitizer
 * glibc's malloc is first set up by that call, which is not safe from two
 * threads (a crash seen in 1 of 5 runs with 2 workers). */
static int trim_then_start(struct proxy *p)
{
    malloc_trim(0);
    return proxy_start(p);
}

/* Raises the open-files soft limit to the hard one (an edge proxy holds a
 * descriptor per connection; shells often start with 1,024) and says what
 * it is. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    log_info("open files limit: %llu", (unsigned long long)rl.rlim_cur);
}

/* After an upgrade, one worker per inherited socket of a listener, at
 * least: the old process may have run more workers (each with its own
 * SO_REUSEPORT socket), and a socket nobody accepts on loses its queue. */
static void inherit_workers(struct gr_config *cfg)
{
    uint32_t need = cfg->workers;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        size_t k = upgrade_count(cfg->listeners[i].name, &cfg->listeners[i].address);
        if (k > need)
            need = (uint32_t)k;
    }
    if (need > cfg->workers) {
        log_warn("upgrade: the old process handed over %u sockets per listener: running %u workers instead of %u "
                 "until the next restart",
                 need, need, cfg->workers);
        cfg->workers = need;
    }
}

/* Starts the workers and serves until a signal stops it. Returns the exit status. */
static int serve(struct gr_config *cfg, bool level_forced)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    /* Workers never see SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2: the main loop handles them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    upgrade_inherit(); /* the sockets of the process this one upgrades, if any */
    inherit_workers(cfg);
    char err[1024] = "out of memory";
    struct ev_loop *loop = ev_default_loop(0);
    /* The admin socket first: a probe that connects while the workers start waits
     * in its accept queue (not refused) and is answered once they serve. */
    struct admin_endpoints *admin = NULL;
    if (cfg->admin.set && (admin = admin_endpoints_start(loop, cfg, err, sizeof(err))) == NULL) {
        log_error("%s", err);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        ev_loop_destroy(loop);
        return 1;
    }
    if (access_log_start(&cfg->access_log, err, sizeof(err)) != GR_OK) {
        log_error("%s", err);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        admin_endpoints_free(admin);
        ev_loop_destroy(loop);
        return 1;
    }
    struct proxy *p = stats_init(cfg) == GR_OK ? proxy_new(cfg, err, sizeof(err)) : NULL;
    int rc = 0;
    if (p == NULL) {
        log_error("%s", err);
        rc = 1;
    } else if (trim_then_start(p) != GR_OK) {
        rc = 1;
    }
    if (rc == 0)
        run_main_loop(loop, cfg, p, admin, &old, level_forced);
    else
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p != NULL)
        proxy_stop(p);
    access_log_stop(); /* the workers wrote their last lines: flushed */
    if (p != NULL)
        proxy_free(p);
    admin_endpoints_free(admin);
    ev_loop_destroy(loop);
    if (rc == 0)
        log_info("stopped");
    return rc;
}

int main(int argc, char **argv)
{
    /* Before anything calls OpenSSL: the overload guard counts its memory. */
    if (!mem_count_openssl())
        fprintf(stderr, "grelay: OpenSSL's memory is not counted (it allocated before main)\n");
    struct args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (upgrade_init(argv) != GR_OK)
        fprintf(stderr, "grelay: cannot read /proc/self/exe: SIGUSR2 (binary upgrade) will not work\n");
    char err[1024];
    struct gr_config *cfg = config_load_file(a.config_path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (a.check) {
        printf("%s: OK (%zu listener%s, %zu cluster%s, %u worker%s)\n", a.config_path, cfg->n_listeners,
               cfg->n_listeners == 1 ? "" : "s", cfg->n_clusters, cfg->n_clusters == 1 ? "" : "s", cfg->workers,
               cfg->workers == 1 ? "" : "s");
        config_free(cfg);
        return 0;
    }
    enum log_level lvl;
    if (log_level_parse(a.level ? a.level : cfg->log_level, &lvl) != GR_OK) {
        fprintf(stderr, "grelay: bad --log-level '%s'\n", a.level);
        config_free(cfg);
        return 2;
    }
    log_threshold = lvl;
    rc = serve(cfg, a.level != NULL);
    config_unref(cfg);
    return rc;
}
