/* grelay: flags, signals, start and stop. */
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/dns.h"
#include "grelay/log.h"
#include "grelay/worker.h"

#include <ev.h>
#include <getopt.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: grelay --config FILE [--check] [--log-level LEVEL]\n"
            "\n"
            "An HTTP/2 gRPC proxy and load balancer.\n"
            "\n"
            "  -c, --config FILE     YAML configuration (see conf/ and README.md)\n"
            "      --check           validate FILE, print what is wrong, exit 0 (valid) or 1\n"
            "  -l, --log-level LVL   error, warn, info or debug (overrides log_level in FILE)\n"
            "  -V, --version         print the version and exit\n"
            "  -h, --help            print this help and exit\n"
            "\n"
            "SIGINT or SIGTERM stops it.\n");
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    log_info("signal %d: stopping", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"log-level", required_argument, NULL, 'l'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *level = NULL;
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'k': check = true; break;
        case 'l': level = optarg; break;
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
    if (config_path == NULL) {
        fprintf(stderr, "grelay: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    char err[1024];
    struct gr_config *cfg = config_load_file(config_path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: OK (%zu listener%s, %zu cluster%s, %u worker%s)\n", config_path, cfg->n_listeners,
               cfg->n_listeners == 1 ? "" : "s", cfg->n_clusters, cfg->n_clusters == 1 ? "" : "s", cfg->workers,
               cfg->workers == 1 ? "" : "s");
        config_free(cfg);
        return 0;
    }
    if (log_level_parse(level ? level : cfg->log_level, &log_threshold) != GR_OK) {
        fprintf(stderr, "grelay: bad --log-level '%s'\n", level);
        config_free(cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Workers never see SIGINT/SIGTERM: the main loop handles them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);

    struct worker **workers = calloc(cfg->workers, sizeof(*workers));
    int rc = 0;
    uint32_t started = 0;
    for (uint32_t i = 0; workers && i < cfg->workers; i++) {
        workers[i] = worker_new(i, cfg, err, sizeof(err));
        if (workers[i] == NULL) {
            log_error("%s", err);
            rc = 1;
            break;
        }
    }
    if (workers == NULL)
        rc = 1;
    for (uint32_t i = 0; rc == 0 && i < cfg->workers; i++) {
        if (worker_start(workers[i]) != GR_OK) {
            log_error("cannot start worker %u", i);
            rc = 1;
            break;
        }
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        for (size_t i = 0; i < cfg->n_listeners; i++)
            log_info("listener %s on %s", cfg->listeners[i].name, cfg->listeners[i].address.text);
        log_info("grelay %s running with %u worker%s", GRELAY_VERSION, cfg->workers, cfg->workers == 1 ? "" : "s");
        struct ev_loop *loop = ev_default_loop(0);
        ev_signal sigint, sigterm;
        ev_signal_init(&sigint, on_signal, SIGINT);
        ev_signal_init(&sigterm, on_signal, SIGTERM);
        ev_signal_start(loop, &sigint);
        ev_signal_start(loop, &sigterm);
        struct dns *dns = dns_start(cfg, workers, cfg->workers, loop);
        ev_run(loop, 0);
        dns_stop(dns);
        ev_signal_stop(loop, &sigint);
        ev_signal_stop(loop, &sigterm);
        ev_loop_destroy(loop);
    }
    for (uint32_t i = 0; i < started; i++)
        worker_stop_and_join(workers[i]);
    for (uint32_t i = 0; workers && i < cfg->workers; i++)
        worker_free(workers[i]);
    free(workers);
    config_free(cfg);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
