/* Fixed-size objects in slabs (see slab.h). */
#include "grelay/slab.h"
#include "grelay/common.h"

#include <stdlib.h>
#include <string.h>

#define SLAB_HDR 16 /* the link to the next slab, keeping objects 16-byte aligned */

/* Under AddressSanitizer a free object is poisoned (but its link word), so
 * a use after free is still reported. */
#define LINK sizeof(void *)

void slab_pool_init(struct slab_pool *p, size_t size, size_t per_slab)
{
    p->size = (size + 15) & ~(size_t)15;
    p->per_slab = per_slab;
    p->free = NULL;
    p->slabs = NULL;
}

void *slab_alloc(struct slab_pool *p)
{
    if (p->free == NULL) {
        char *slab = malloc(SLAB_HDR + p->size * p->per_slab);
        if (slab == NULL)
            return NULL;
        *(void **)slab = p->slabs;
        p->slabs = slab;
        for (size_t i = p->per_slab; i-- > 0;) {
            void *obj = slab + SLAB_HDR + i * p->size;
            *(void **)obj = p->free;
            p->free = obj;
            GR_POISON((char *)obj + LINK, p->size - LINK);
        }
    }
    void *obj = p->free;
    p->free = *(void **)obj;
    GR_UNPOISON(obj, p->size);
    memset(obj, 0, p->size);
    return obj;
}

void slab_free(struct slab_pool *p, void *obj)
{
    if (obj == NULL)
        return;
    *(void **)obj = p->free;
    p->free = obj;
    GR_POISON((char *)obj + LINK, p->size - LINK);
}

void slab_pool_destroy(struct slab_pool *p)
{
    while (p->slabs != NULL) {
        GR_UNPOISON(p->slabs, SLAB_HDR + p->size * p->per_slab);
        void *next = *(void **)p->slabs;
        free(p->slabs);
        p->slabs = next;
    }
    p->free = NULL;
}
