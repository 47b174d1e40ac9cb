/* Fixed-size objects packed in slabs, on one thread (a worker's). Long-lived
 * objects that are many (client connections) sit side by side instead of
 * between short-lived allocations, so memory freed around them (an idle
 * connection's HTTP/2 session) goes back to the system in whole pages.
 * Slabs are kept for reuse until the pool is destroyed. */
#ifndef GRELAY_SLAB_H
#define GRELAY_SLAB_H

#include <stddef.h>

struct slab_pool {
    size_t size;     /* object size, rounded up to 16 bytes */
    size_t per_slab; /* objects per slab */
    void *free;      /* free objects, linked through their first word */
    void *slabs;     /* all slabs, linked through their first word */
};

void slab_pool_init(struct slab_pool *p, size_t size, size_t per_slab);
/* A zeroed object, or NULL. */
void *slab_alloc(struct slab_pool *p);
void slab_free(struct slab_pool *p, void *obj);
void slab_pool_destroy(struct slab_pool *p);

#endif
