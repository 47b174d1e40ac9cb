/* The admin endpoint's pages and actions (docs/observability.md, "Admin
 * endpoint"), served by admin.c on the main thread's loop:
 *   GET  /ready /healthz /metrics /config_dump /clusters /stats.json /
 *   POST /reload /drain /log_level?level=LEVEL (allow_mutations only)
 *   POST /test/stall_worker?worker=N&seconds=S (only when the process
 *        started with GRELAY_TEST_HOOKS=1: tests make a worker stuck)
 * Bound by main right after the config loads, before the listeners and
 * workers: a probe that connects meanwhile waits in the accept queue and
 * is answered once they serve (the main loop runs from then on); /ready
 * says 503 whenever it runs without serving workers. Owned by main. */
#ifndef GRELAY_ADMIN_ENDPOINTS_H
#define GRELAY_ADMIN_ENDPOINTS_H

#include "grelay/config.h"

#include <ev.h>

struct admin_endpoints;
struct proxy;
struct reload;
struct drain;

/* A worker whose loop has not turned for this long fails GET /healthz. */
#define ADMIN_HEALTHZ_STALE_US 3000000ull

/* Listens on cfg->admin (cfg->admin.set must be true) on loop, cfg being
 * the snapshot loaded at start (a reference is taken). Returns NULL with
 * a message in err when the socket cannot be bound. */
struct admin_endpoints *admin_endpoints_start(struct ev_loop *loop, struct gr_config *cfg, char *err, size_t errlen);
/* The workers serve (p), reloads go through r (whose good reloads now
 * update allow_mutations), drains through d: /ready may say 200 from now
 * on. All NULL: main is stopping; endpoints that need them answer 503. */
void admin_endpoints_serving(struct admin_endpoints *e, struct proxy *p, struct reload *r, struct drain *d);
/* The listening socket, for a binary upgrade to hand over (admin.h). */
int admin_endpoints_fd(const struct admin_endpoints *e);
/* Closes the listener and its connections (NULL is fine). */
void admin_endpoints_free(struct admin_endpoints *e);

#endif
