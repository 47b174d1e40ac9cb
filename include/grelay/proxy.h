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
struct proxy *proxy_new(const struct gr_config *cfg, char *err, size_t errlen);
/* Starts every worker's thread. Returns GR_OK or GR_ERR_IO (then the
 * workers already started are still running: proxy_stop them). */
int proxy_start(struct proxy *p);
/* The workers, for whoever publishes to them (DNS). */
struct worker **proxy_workers(struct proxy *p, size_t *n);
/* Asks every started worker to stop (each closes its connections) and
 * waits for their threads. */
void proxy_stop(struct proxy *p);
void proxy_free(struct proxy *p);

#endif
