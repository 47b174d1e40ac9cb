/* A per-worker allocator for nghttp2's sessions: free lists per size class
 * on the worker's own thread (nghttp2 allocates and frees many small
 * objects per call: stream objects, header copies, HPACK entries). Larger
 * blocks go straight to malloc. Not thread-safe: one per worker. */
#ifndef GRELAY_MEM_H
#define GRELAY_MEM_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Size classes: 16 to 256 bytes in steps of 16, then four per power of
 * two up to 4096 (320, 384, 448, 512, 640, ...): a block wastes at most
 * 15 bytes, or a fifth of its size. nghttp2's objects that live as long as
 * a call (its stream, 224 bytes in 1.52; an outbound DATA item, 152) fit
 * their class within 8 bytes, where classes of powers of two wasted a
 * third (issue 16: 10,000 held calls). */
#define MEM_CLASSES 32

/* The class of a block of size bytes (MEM_CLASSES: past the classes). */
static inline unsigned mem_class(size_t size)
{
    if (size <= 256)
        return size == 0 ? 0 : (unsigned)((size - 1) >> 4);
    if (size > 4096)
        return MEM_CLASSES;
    unsigned b = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1)); /* 8..11 */
    return 16 + (b - 8) * 4 + (unsigned)(((size - 1) >> (b - 2)) & 3);
}
/* The usable bytes of class c (< MEM_CLASSES). */
static inline size_t mem_class_size(unsigned c)
{
    if (c < 16)
        return (size_t)(c + 1) << 4;
    unsigned b = 8 + (c - 16) / 4;
    return ((size_t)1 << b) + (size_t)((c - 16) % 4 + 1) * ((size_t)1 << (b - 2));
}

struct mem_pool {
    void *free[MEM_CLASSES];      /* free blocks of each class (headers), linked via the word after the header */
    uint32_t n_free[MEM_CLASSES]; /* blocks on each free list, at most MAX_FREE_PER_CLASS (mem.c) */
    nghttp2_mem mem;              /* what nghttp2 sessions are given */
    size_t bytes;                 /* bytes taken from malloc and not yet freed (in use or on free lists, headers
                                   * included): the worker's figure for the overload guard */
};

void mem_pool_init(struct mem_pool *p);
void mem_pool_destroy(struct mem_pool *p);
/* Frees all but keep free blocks of each class (after many sessions went away). */
void mem_pool_trim(struct mem_pool *p, uint32_t keep);

/* Routes OpenSSL's allocations through counting wrappers (a 16-byte size
 * header each), so that the overload guard sees TLS memory too: records,
 * handshake state, sessions. Call first thing in main(), before OpenSSL
 * allocates anything; returns false (and counts nothing) if it is too late. */
bool mem_count_openssl(void);
/* Bytes OpenSSL holds now through those wrappers (any thread). */
uint64_t mem_openssl_bytes(void);

#endif
