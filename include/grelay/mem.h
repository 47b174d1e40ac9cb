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

#define MEM_CLASSES 8 /* 32, 64, 128, 256, 512, 1024, 2048, 4096 bytes */

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
