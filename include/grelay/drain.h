/* The drain of the whole process, on SIGTERM or SIGINT (and later after a
 * binary upgrade has handed the listening sockets over): readiness turns
 * false at once; after drain_delay the listeners close and every client
 * connection drains (proxy_drain); calls in flight have until
 * drain_timeout, counted from the signal, to finish; then the rest are cut
 * with UNAVAILABLE "grelay is shutting down". The main loop ends when no
 * client connection is left (or half a second after the cut), and main
 * stops the workers. Runs on the main thread's loop. Owned by main. */
#ifndef GRELAY_DRAIN_H
#define GRELAY_DRAIN_H

#include "grelay/config.h"
#include "grelay/proxy.h"

#include <ev.h>
#include <stdbool.h>

struct drain;

/* A drain of p on loop, with the drain_delay and drain_timeout of the
 * snapshot p runs when the drain begins; NULL when out of memory. */
struct drain *drain_new(struct ev_loop *loop, struct proxy *p);
/* Begins the drain (why says what asked for it, for the log). Called
 * again while draining, skips what is left of the wait: the calls left
 * are cut now; a third time, the loop ends at once. The one entry point of
 * "stop accepting, drain every connection, then exit". */
void drain_start(struct drain *d, const char *why);
/* Whether this process takes new work: true until a drain begins (what
 * a readiness endpoint reports). Any thread. */
bool drain_ready(void);
/* Stops the drain's watchers and frees it (NULL is fine). */
void drain_free(struct drain *d);

#endif
