/* Payload buffers: queues of chunks drawn from a per-worker pool, in two
 * classes: a small chunk (CHUNK_SMALL bytes) for a queue's first append
 * when it is small, a big one (CHUNK_SIZE) otherwise. So a queue holding
 * one short gRPC message costs a 256-byte block, not 16 KiB (issue 16:
 * 10,000 calls opening at once each queued a 105-byte message), and a
 * large transfer still moves in 16 KiB chunks with one copy per byte.
 * The number of bytes a stream may queue is its buffer limit; the chunks
 * return to the pool as soon as they are drained. */
#ifndef GRELAY_BUF_H
#define GRELAY_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define CHUNK_SIZE (16 * 1024) /* bytes of a big chunk */
/* Bytes of a small chunk: header and data make 248 bytes, a 256-byte
 * block of glibc's malloc (its 8-byte size word included). */
#define CHUNK_SMALL (248 - offsetof(struct chunk, data))

struct chunk {
    struct chunk *next; /* next chunk in a buffer or in the free list */
    uint32_t start;     /* first unread byte */
    uint32_t end;       /* one past the last written byte */
    uint32_t cap;       /* bytes at data: CHUNK_SIZE or CHUNK_SMALL */
    uint8_t data[];     /* the bytes: [start, end) are queued */
};

/* Free chunks of one size; not shared between threads. */
struct chunk_class {
    struct chunk *free; /* free list */
    size_t n_free;      /* chunks on the free list */
    size_t n_free_low;  /* fewest on the free list since the last trim */
    size_t max_free;    /* beyond this, released chunks go back to malloc */
    size_t n_out;       /* chunks handed out and not yet returned */
};

/* The free chunks of one worker, big and small. */
struct chunk_pool {
    struct chunk_class big;   /* CHUNK_SIZE chunks */
    struct chunk_class small; /* CHUNK_SMALL chunks */
};

/* A FIFO of bytes. */
struct buf {
    struct chunk *head; /* oldest chunk, read from */
    struct chunk *tail; /* newest chunk, written to */
    size_t len;         /* bytes queued */
};

/* At most max_free big chunks wait on the free list, and 16 times as many
 * small ones (a quarter of the bytes). */
void buf_pool_init(struct chunk_pool *p, size_t max_free);
void buf_pool_destroy(struct chunk_pool *p);
/* Frees the free chunks that no one took since the last trim, keeping at
 * least keep of each class; returns how many were freed. Chunks a steady
 * load cycles through stay (freeing them would only fault them in again). */
size_t buf_pool_trim(struct chunk_pool *p, size_t keep);
/* The next trim frees every free chunk beyond keep (the worker is quiet). */
void buf_pool_mark_unused(struct chunk_pool *p);
/* Bytes of chunks taken from malloc: handed out or on the free lists. */
uint64_t buf_pool_bytes(const struct chunk_pool *p);

static inline void buf_init(struct buf *b)
{
    b->head = b->tail = NULL;
    b->len = 0;
}
/* Appends len bytes; returns 0 or GR_ERR_NOMEM. */
int buf_append(struct buf *b, struct chunk_pool *p, const uint8_t *data, size_t len);
/* Copies up to len bytes out and drains them; returns the count copied. */
size_t buf_read(struct buf *b, struct chunk_pool *p, uint8_t *out, size_t len);
/* Fills up to max iovecs with queued bytes without draining; returns the count. */
int buf_peek_iov(const struct buf *b, struct iovec *iov, int max);
/* Copies up to len bytes starting offset bytes in, without draining;
 * returns the count copied. */
size_t buf_copy_at(const struct buf *b, size_t offset, uint8_t *out, size_t len);
/* Moves len bytes (at most src's len) from the head of src to the end of
 * dst: whole chunks are relinked, not copied; only a chunk of which part
 * moves is copied from. Both draw from p. Returns 0 or GR_ERR_NOMEM (then
 * nothing more moved; what did stays moved). */
int buf_move(struct buf *dst, struct buf *src, struct chunk_pool *p, size_t len);
/* Appends len bytes of src, offset bytes in (src keeps them); returns the
 * count appended, short when src has fewer, or GR_ERR_NOMEM (negative). */
long buf_append_from(struct buf *dst, struct chunk_pool *p, const struct buf *src, size_t offset, size_t len);
/* Drains len bytes (at most buf len). */
void buf_drain(struct buf *b, struct chunk_pool *p, size_t len);
/* Drops everything queued. */
void buf_clear(struct buf *b, struct chunk_pool *p);

#endif
