/* The proxy's worker threads: the top of the module graph. Builds each
 * worker (its loop, listeners with SO_REUSEPORT, the sessions' callbacks,
 * its view of every cluster), runs it on its own thread, hands it endpoint
 * sets from the main thread, and stops it. Owned by main. */
#ifndef GRELAY_PROXY_H
#define GRELAY_PROXY_H

#include "grelay/config.h"

#include <stddef.h>
#include <stdint.h>

struct proxy;
struct worker;

/* Creates cfg->workers workers and binds their listeners. Returns NULL
 * with a message in err when a socket cannot be set up or memory runs out. */
struct proxy *proxy_new(struct gr_config *cfg, char *err, size_t errlen);
/* Starts every worker's thread. Returns GR_OK or GR_ERR_IO (then the
 * workers already started are still running: proxy_stop them). */
int proxy_start(struct proxy *p);
/* The workers, for whoever publishes to them (DNS). */
struct worker **proxy_workers(struct proxy *p, size_t *n);
/* A reload (main thread): next, a loaded snapshot (the caller keeps its
 * reference; the proxy takes its own), becomes the one new calls use on
 * every worker. Listeners and clusters are matched by name (docs/reload.md):
 * new listeners are bound here, one socket per worker, before anything
 * changes. Slots are written into next (gr_listener_cfg.slot,
 * gr_cluster_cfg.index). Returns once every worker runs next; GR_OK, or an
 * error with a message in err and nothing changed (a socket cannot be
 * bound). Never while another reload runs. */
int proxy_reload(struct proxy *p, struct gr_config *next, char *err, size_t errlen);
/* The snapshot the workers run now. */
struct gr_config *proxy_config(struct proxy *p);
/* Asks every started worker to stop (each closes its connections) and
 * waits for their threads. */
void proxy_stop(struct proxy *p);
void proxy_free(struct proxy *p);

#endif
