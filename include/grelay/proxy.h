/* The proxy's worker threads: the top of the module graph. Builds each
 * worker (its loop, listeners with SO_REUSEPORT, the sessions' callbacks,
 * its view of every cluster), runs it on its own thread, hands it endpoint
 * sets from the main thread, and stops it. Owned by main. */
#ifndef GRELAY_PROXY_H
#define GRELAY_PROXY_H

#include "grelay/config.h"

#include <ev.h>
#include <stdbool.h>
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
/* Drain (SIGTERM, and later a binary upgrade; drain.h decides when): every
 * worker closes its listening sockets and the connections whose protocol
 * is not chosen yet, and tells each client connection to drain (HTTP/2:
 * GOAWAY 2^31-1 and a PING, then the final GOAWAY; HTTP/1.1: `Connection:
 * close`, idle ones closed); connections close when their last call ends.
 * A worker left with no client connection sends notify (an ev_async of
 * loop, the caller's: main thread). Main thread; once. */
void proxy_drain(struct proxy *p, struct ev_loop *loop, ev_async *notify);
/* The calls still open end now with UNAVAILABLE "grelay is shutting down"
 * (begins the drain first if need be). */
void proxy_drain_cut(struct proxy *p);
/* True once every worker has no client connection left. */
bool proxy_drained(struct proxy *p);
/* Calls drained (ended on their own since the drain began) and cut, all
 * workers together, as last published (every 20 ms while draining). */
void proxy_drain_counts(struct proxy *p, uint64_t *drained, uint64_t *cut);
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
struct upgrade_sock;
/* Fills out with every open listening socket of every worker (at most
 * max), for a binary upgrade to hand over; returns how many. Main thread,
 * between reloads and before a drain (the sockets do not change then). */
size_t proxy_listen_socks(struct proxy *p, struct upgrade_sock *out, size_t max);
/* Asks every started worker to stop (each closes its connections) and
 * waits for their threads. */
void proxy_stop(struct proxy *p);
void proxy_free(struct proxy *p);

#endif
