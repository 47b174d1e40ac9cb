/* Arena: bump allocator for the strings and small objects of one owner
 * (a stream, a config snapshot). Everything is freed at once. */
#ifndef GRELAY_ARENA_H
#define GRELAY_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head; /* newest block; older ones follow */
    size_t block_size;        /* size of ordinary blocks */
    unsigned char *first;     /* caller-provided first block (not freed), or NULL */
    size_t first_size;        /* bytes at first */
    size_t first_used;        /* bytes of first handed out */
};

void arena_init(struct arena *a, size_t block_size);
/* The same, with the first first_size bytes served from buf (memory the
 * owner embeds, so most small owners never call malloc). */
void arena_init_with(struct arena *a, size_t block_size, void *buf, size_t first_size);
/* Returns size bytes aligned to 8, or NULL when out of memory. */
void *arena_alloc(struct arena *a, size_t size);
/* Copies len bytes and adds a NUL; returns NULL when out of memory. */
char *arena_strndup(struct arena *a, const char *s, size_t len);
void arena_free(struct arena *a);

#endif
