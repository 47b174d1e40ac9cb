/* Reloading the configuration on the main thread: SIGHUP (main.c) or a
 * change of the file seen by inotify (watch_config). The file is loaded
 * beside the running snapshot; a file that does not load changes nothing
 * (its file:line:col error is logged); a good one is published to every
 * worker (proxy_reload) and DNS discovery restarts on it (dns_restart).
 * See docs/reload.md. Owned by main. */
#ifndef GRELAY_RELOAD_H
#define GRELAY_RELOAD_H

#include "grelay/config.h"

#include <ev.h>
#include <stdbool.h>

struct proxy;
struct dns;
struct health;
struct reload;

/* Starts watching cfg->path when cfg->watch_config says so. cfg is the
 * running snapshot (a reference is taken); *dns the running discovery and
 * *health the running health checker, replaced at each reload. level_forced: --log-level was given, so a
 * reload leaves the level alone. NULL when out of memory. */
struct reload *reload_new(struct gr_config *cfg, struct proxy *p, struct dns **dns, struct health **health,
                          struct ev_loop *loop, bool level_forced);
/* Loads the file again and, when it is good, makes it the running
 * configuration. why is logged ("SIGHUP", "the file changed"). */
void reload_now(struct reload *r, const char *why);
/* The same, saying what happened in msg (msglen bytes): "reload: done:
 * ..." or "reload: failed: file:line:col: ...". Returns GR_OK, GR_ERR_AGAIN
 * (draining: ignored), GR_ERR_CONFIG (the file does not load) or
 * GR_ERR_IO (a listener cannot be bound). Each attempt is counted in
 * grelay_config_reloads_total. */
int reload_run(struct reload *r, const char *why, char *msg, size_t msglen);
/* fn(ctx, next) runs after each good reload, next the new snapshot (the
 * admin endpoint follows allow_mutations with it). One listener. */
typedef void (*reload_done_fn)(void *ctx, const struct gr_config *next);
void reload_on_done(struct reload *r, reload_done_fn fn, void *ctx);
/* The snapshot running now (DNS and main's logs use it). */
const struct gr_config *reload_config(const struct reload *r);
void reload_free(struct reload *r);

#endif
