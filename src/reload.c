/* Reloading the configuration (see include/grelay/reload.h). */
#include "grelay/reload.h"
#include "grelay/access_log.h"
#include "grelay/dns.h"
#include "grelay/health.h"
#include "grelay/drain.h"
#include "grelay/log.h"
#include "grelay/proxy.h"
#include "grelay/stats.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* A change is acted on once the directory has been quiet this long: an
 * editor's save or a ConfigMap update is several events in a row. */
#define RELOAD_DEBOUNCE_S 0.2

struct reload {
    struct gr_config *cfg;  /* the running snapshot (a reference) */
    char *path;             /* the file, as given with --config */
    struct proxy *p;        /* publishes snapshots to the workers */
    struct dns **dns;       /* main's DNS discovery, restarted on each new snapshot */
    struct health **health; /* main's health checker, restarted on each new snapshot (before DNS) */
    struct ev_loop *loop;   /* main's loop */
    bool level_forced;      /* --log-level given: log_level in the file is ignored */
    int ifd;                /* inotify descriptor while watching, else -1 */
    ev_io inotify;          /* readable: events in the file's directory */
    ev_timer debounce;      /* fires once the directory is quiet */
    struct stat seen;       /* the file (symlinks followed) as last loaded: a change of any of it reloads */
    bool seen_ok;           /* seen is filled */
    reload_done_fn done;    /* told of each good reload (the admin endpoint), or NULL */
    void *done_ctx;         /* done's first argument */
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void remember(struct reload *r) { r->seen_ok = stat(r->path, &r->seen) == 0; }

static void on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct reload *r = container_of(t, struct reload, debounce);
    struct stat now;
    if (stat(r->path, &now) != 0) {
        log_debug("watch_config: %s: %s (waiting for it to come back)", r->path, strerror(errno));
        return;
    }
    if (r->seen_ok && same_file(&now, &r->seen))
        return; /* something else in the directory changed */
    reload_now(r, "the file changed");
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct reload *r = container_of(io, struct reload, inotify);
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    /* Bounded: the descriptor is non-blocking and a read takes whole events. */
    for (int i = 0; i < 64 && read(r->ifd, buf, sizeof(buf)) > 0; i++)
        ;
    ev_timer_stop(loop, &r->debounce);
    ev_timer_set(&r->debounce, RELOAD_DEBOUNCE_S, 0.0);
    ev_timer_start(loop, &r->debounce);
}

/* Watches the file's directory: a ConfigMap update renames the ..data
 * symlink there, which a watch on the file itself would never see. */
static void watch(struct reload *r, bool on)
{
    if (on == (r->ifd >= 0))
        return;
    if (!on) {
        ev_io_stop(r->loop, &r->inotify);
        ev_timer_stop(r->loop, &r->debounce);
        close(r->ifd);
        r->ifd = -1;
        log_info("watch_config: no longer watching %s", r->path);
        return;
    }
    char *copy = strdup(r->path);
    const char *dir = copy ? dirname(copy) : NULL;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB;
    if (dir == NULL || fd < 0 || inotify_add_watch(fd, dir, mask) < 0) {
        log_error("watch_config: cannot watch %s: %s (SIGHUP still reloads)", dir ? dir : r->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(copy);
        return;
    }
    r->ifd = fd;
    ev_io_init(&r->inotify, on_inotify, fd, EV_READ);
    ev_io_start(r->loop, &r->inotify);
    log_info("watch_config: watching %s (its directory %s)", r->path, dir);
    free(copy);
}

struct reload *reload_new(struct gr_config *cfg, struct proxy *p, struct dns **dns, struct health **health,
                          struct ev_loop *loop, bool level_forced)
{
    struct reload *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->path = strdup(cfg->path)) == NULL) {
        free(r);
        return NULL;
    }
    r->cfg = config_ref(cfg);
    r->p = p;
    r->dns = dns;
    r->health = health;
    r->loop = loop;
    r->level_forced = level_forced;
    r->ifd = -1;
    ev_timer_init(&r->debounce, on_debounce, RELOAD_DEBOUNCE_S, 0.0);
    remember(r);
    watch(r, cfg->watch_config);
    return r;
}

void reload_now(struct reload *r, const char *why)
{
    char msg[2048];
    (void)reload_run(r, why, msg, sizeof(msg));
}

int reload_run(struct reload *r, const char *why, char *msg, size_t msglen)
{
    char err[2048];
    if (!drain_ready()) { /* a reload could open listeners the drain closed */
        log_warn("reload (%s): ignored: grelay is draining", why);
        snprintf(msg, msglen, "reload: ignored: grelay is draining");
        return GR_ERR_AGAIN;
    }
    log_info("reload (%s): loading %s", why, r->path);
    struct stat before;
    bool before_ok = stat(r->path, &before) == 0;
    struct gr_config *next = config_load_file(r->path, err, sizeof(err));
    if (next == NULL) {
        log_error("reload: %s; grelay keeps running the previous configuration", err);
        snprintf(msg, msglen, "reload: failed: %s; grelay keeps running the previous configuration", err);
        r->seen = before; /* not again until the file changes again */
        r->seen_ok = before_ok;
        stats_reload_result(false);
        return GR_ERR_CONFIG;
    }
    if (proxy_reload(r->p, next, err, sizeof(err)) != GR_OK) {
        log_error("reload: %s; grelay keeps running the previous configuration", err);
        snprintf(msg, msglen, "reload: failed: %s; grelay keeps running the previous configuration", err);
        config_unref(next);
        stats_reload_result(false);
        return GR_ERR_IO;
    }
    size_t n;
    struct worker **workers = proxy_workers(r->p, &n);
    /* Health first: DNS hands its sets to it, the carried ones at once. */
    *r->health = health_restart(*r->health, next, workers, n, r->loop);
    struct dns_sink sink = {*r->health != NULL ? health_publish : NULL, *r->health};
    *r->dns = dns_restart(*r->dns, next, workers, n, r->loop, sink);
    /* The new path or format for later lines; a file that cannot be opened
     * leaves the log as it was (the rest of the reload stands). */
    if (access_log_reconfigure(&next->access_log, err, sizeof(err)) != GR_OK)
        log_error("reload: %s; the access log goes on as before", err);
    config_unref(r->cfg);
    r->cfg = next;
    r->seen = before;
    r->seen_ok = before_ok;
    enum log_level lvl;
    if (!r->level_forced && log_level_parse(next->log_level, &lvl) != GR_OK)
        log_warn("reload: log_level '%s' ignored", next->log_level);
    else if (!r->level_forced)
        log_threshold = lvl;
    watch(r, next->watch_config);
    if (r->done != NULL)
        r->done(r->done_ctx, next);
    stats_reload_result(true);
    snprintf(msg, msglen, "reload: done: %zu listener%s, %zu cluster%s", next->n_listeners,
             next->n_listeners == 1 ? "" : "s", next->n_clusters, next->n_clusters == 1 ? "" : "s");
    log_info("%s", msg);
    return GR_OK;
}

void reload_on_done(struct reload *r, reload_done_fn fn, void *ctx)
{
    r->done = fn;
    r->done_ctx = ctx;
}

const struct gr_config *reload_config(const struct reload *r) { return r->cfg; }

void reload_free(struct reload *r)
{
    if (r == NULL)
        return;
    watch(r, false);
    config_unref(r->cfg);
    free(r->path);
    free(r);
}
