/* Endpoint sets: the endpoints of a cluster at one moment, immutable and
 * refcounted (shared across threads). Static clusters have one for their
 * whole run; DNS-discovered ones get a new set from the main thread each
 * time an answer changes, and every worker adopts it between events. */
#ifndef GRELAY_CLUSTER_H
#define GRELAY_CLUSTER_H

#include "grelay/config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* One endpoint: an address to connect to. */
struct endpoint {
    struct gr_addr address; /* .text points at text */
    char text[80];          /* "10.0.0.1:50051", "[::1]:50051" */
    char host[256];         /* name for TLS SNI and :authority fallbacks: the DNS name, or the IP */
    uint32_t weight;        /* share for round_robin and random, 1..1000 (the config's) */
    bool unhealthy;         /* its health checks failed (health.h): no new calls, unless in panic */
};

/* The endpoints of a cluster at one moment; never changed once published. */
struct endpoint_set {
    atomic_int refs;       /* holders on any thread (main, workers); the last unref frees the set */
    size_t n;              /* entries in eps; may be 0 (a name that has not resolved) */
    char why_empty[200];   /* with n == 0: what callers are told */
    struct endpoint eps[]; /* the endpoints: IP literals as written, then each name's addresses */
};

struct endpoint_set *cluster_set_new(size_t n);
void cluster_set_ref(struct endpoint_set *s);
void cluster_set_unref(struct endpoint_set *s);
/* The endpoints written in the config that are IP addresses (all of a
 * static cluster's). */
struct endpoint_set *cluster_static_set(const struct gr_cluster_cfg *cl);
/* Fills e from an address and port; host is the name to present (SNI). */
void cluster_endpoint_fill(struct endpoint *e, const struct sockaddr *sa, socklen_t len, uint16_t port,
                           const char *host, uint32_t weight);

#endif
