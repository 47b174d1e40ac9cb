/* Bump allocator: blocks of block_size, larger requests get a block of their own. */
#include "grelay/arena.h"

#include <stdlib.h>
#include <string.h>

struct arena_block {
    struct arena_block *next;          /* older block */
    size_t used;                       /* bytes handed out */
    size_t size;                       /* bytes in data */
    _Alignas(16) unsigned char data[]; /* the block's bytes (size of them) */
};

void arena_init(struct arena *a, size_t block_size)
{
    a->head = NULL;
    a->block_size = block_size;
    a->first = NULL;
    a->first_size = a->first_used = 0;
}

void arena_init_with(struct arena *a, size_t block_size, void *buf, size_t first_size)
{
    arena_init(a, block_size);
    a->first = buf;
    a->first_size = first_size;
}

void *arena_alloc(struct arena *a, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    if (a->first != NULL && a->first_size - a->first_used >= size) {
        void *p = a->first + a->first_used;
        a->first_used += size;
        return p;
    }
    struct arena_block *b = a->head;
    if (b == NULL || b->size - b->used < size) {
        size_t bsize = size > a->block_size / 2 ? size : a->block_size;
        struct arena_block *nb = malloc(sizeof(*nb) + bsize);
        if (nb == NULL)
            return NULL;
        nb->used = 0;
        nb->size = bsize;
        if (bsize == size && b != NULL) {
            /* A big one-off: keep the current block as the head for small requests. */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->head = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->first_used = 0;
}
