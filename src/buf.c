/* Chunk queues and the per-worker chunk free lists, one per class.
 *
 * Under AddressSanitizer a chunk on the free list is poisoned whole, its
 * next link included (review F14): a read or write through a pointer into
 * a drained chunk is reported. The list unpoisons a chunk before it reads
 * the link, when the chunk leaves the list. */
#include "grelay/buf.h"
#include "grelay/common.h"

#include <stdlib.h>
#include <string.h>

/* Small chunks kept free per big one (buf_pool_init's max_free). */
#define SMALL_PER_BIG 16

static void class_init(struct chunk_class *k, size_t max_free)
{
    k->free = NULL;
    k->n_free = k->n_free_low = 0;
    k->max_free = max_free;
    k->n_out = 0;
}

void buf_pool_init(struct chunk_pool *p, size_t max_free)
{
    class_init(&p->big, max_free);
    class_init(&p->small, max_free * SMALL_PER_BIG);
}

/* Bytes of a chunk of class k of p (header included). */
static size_t chunk_bytes(const struct chunk_pool *p, const struct chunk_class *k)
{
    return offsetof(struct chunk, data) + (k == &p->big ? CHUNK_SIZE : CHUNK_SMALL);
}

/* Takes the first chunk off the free list of k (which is not empty); n is
 * the chunk's size. */
static struct chunk *pop_free(struct chunk_class *k, size_t n)
{
    struct chunk *c = k->free;
    GR_UNPOISON(c, n);
    k->free = c->next;
    return c;
}

static size_t class_free(struct chunk_class *k, size_t bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(pop_free(k, bytes));
    k->n_free -= n;
    return n;
}

static size_t class_trim(const struct chunk_pool *p, struct chunk_class *k, size_t keep)
{
    size_t unused = k->n_free_low, over = k->n_free > keep ? k->n_free - keep : 0;
    size_t freed = class_free(k, chunk_bytes(p, k), unused < over ? unused : over);
    k->n_free_low = k->n_free;
    return freed;
}

size_t buf_pool_trim(struct chunk_pool *p, size_t keep)
{
    return class_trim(p, &p->big, keep) + class_trim(p, &p->small, keep);
}

void buf_pool_mark_unused(struct chunk_pool *p)
{
    p->big.n_free_low = p->big.n_free;
    p->small.n_free_low = p->small.n_free;
}

uint64_t buf_pool_bytes(const struct chunk_pool *p)
{
    return (uint64_t)(p->big.n_out + p->big.n_free) * chunk_bytes(p, &p->big) +
           (uint64_t)(p->small.n_out + p->small.n_free) * chunk_bytes(p, &p->small);
}

void buf_pool_destroy(struct chunk_pool *p)
{
    class_free(&p->big, chunk_bytes(p, &p->big), p->big.n_free);
    class_free(&p->small, chunk_bytes(p, &p->small), p->small.n_free);
}

/* A chunk of cap bytes (CHUNK_SIZE or CHUNK_SMALL), or NULL. */
static struct chunk *chunk_get(struct chunk_pool *p, uint32_t cap)
{
    struct chunk_class *k = cap == CHUNK_SIZE ? &p->big : &p->small;
    size_t bytes = offsetof(struct chunk, data) + cap;
    struct chunk *c;
    if (k->free != NULL) {
        c = pop_free(k, bytes);
        if (--k->n_free < k->n_free_low)
            k->n_free_low = k->n_free;
    } else {
        c = malloc(bytes);
        if (c == NULL)
            return NULL;
    }
    c->next = NULL;
    c->start = c->end = 0;
    c->cap = cap;
    k->n_out++;
    return c;
}

static void chunk_put(struct chunk_pool *p, struct chunk *c)
{
    struct chunk_class *k = c->cap == CHUNK_SIZE ? &p->big : &p->small;
    size_t bytes = offsetof(struct chunk, data) + c->cap;
    k->n_out--;
    if (k->n_free >= k->max_free) {
        free(c);
        return;
    }
    c->next = k->free;
    k->free = c;
    k->n_free++;
    GR_POISON(c, bytes);
}

int buf_append(struct buf *b, struct chunk_pool *p, const uint8_t *data, size_t len)
{
    while (len > 0) {
        struct chunk *t = b->tail;
        if (t == NULL || t->end == t->cap) {
            /* Small only as a queue's first chunk: a queue that grows past
             * it goes on in big chunks. */
            t = chunk_get(p, t == NULL && len <= CHUNK_SMALL ? (uint32_t)CHUNK_SMALL : CHUNK_SIZE);
            if (t == NULL)
                return GR_ERR_NOMEM;
            if (b->tail != NULL)
                b->tail->next = t;
            else
                b->head = t;
            b->tail = t;
        }
        size_t n = t->cap - t->end;
        if (n > len)
            n = len;
        memcpy(t->data + t->end, data, n);
        t->end += (uint32_t)n;
        b->len += n;
        data += n;
        len -= n;
    }
    return GR_OK;
}

int buf_move(struct buf *dst, struct buf *src, struct chunk_pool *p, size_t len)
{
    while (len > 0 && src->head != NULL) {
        struct chunk *h = src->head;
        size_t n = h->end - h->start;
        if (n == 0) { /* nothing in it (not kept so): let go */
            src->head = h->next;
            if (src->head == NULL)
                src->tail = NULL;
            chunk_put(p, h);
            continue;
        }
        if (n > len) { /* part of it: copied */
            if (buf_append(dst, p, h->data + h->start, len) != GR_OK)
                return GR_ERR_NOMEM;
            buf_drain(src, p, len);
            return GR_OK;
        }
        src->head = h->next; /* all of it: relinked */
        if (src->head == NULL)
            src->tail = NULL;
        src->len -= n;
        h->next = NULL;
        if (dst->tail != NULL)
            dst->tail->next = h;
        else
            dst->head = h;
        dst->tail = h;
        dst->len += n;
        len -= n;
    }
    return GR_OK;
}

void buf_drain(struct buf *b, struct chunk_pool *p, size_t len)
{
    while (len > 0 && b->head != NULL) {
        struct chunk *h = b->head;
        size_t n = h->end - h->start;
        if (n > len)
            n = len;
        h->start += (uint32_t)n;
        b->len -= n;
        len -= n;
        if (h->start == h->end) {
            b->head = h->next;
            if (b->head == NULL)
                b->tail = NULL;
            chunk_put(p, h);
        }
    }
}

size_t buf_read(struct buf *b, struct chunk_pool *p, uint8_t *out, size_t len)
{
    size_t done = 0;
    while (done < len && b->head != NULL) {
        struct chunk *h = b->head;
        size_t n = h->end - h->start;
        if (n > len - done)
            n = len - done;
        memcpy(out + done, h->data + h->start, n);
        done += n;
        buf_drain(b, p, n);
    }
    return done;
}

/* The chunk of b that holds the byte offset bytes in, with *offset made
 * relative to its first queued byte; NULL past the end. */
static const struct chunk *seek(const struct buf *b, size_t *offset)
{
    const struct chunk *c = b->head;
    while (c != NULL && *offset >= (size_t)(c->end - c->start)) {
        *offset -= c->end - c->start;
        c = c->next;
    }
    return c;
}

long buf_append_from(struct buf *dst, struct chunk_pool *p, const struct buf *src, size_t offset, size_t len)
{
    size_t done = 0;
    for (const struct chunk *c = seek(src, &offset); c != NULL && done < len; c = c->next, offset = 0) {
        size_t n = c->end - c->start - offset;
        if (n > len - done)
            n = len - done;
        if (buf_append(dst, p, c->data + c->start + offset, n) != GR_OK)
            return GR_ERR_NOMEM;
        done += n;
    }
    return (long)done;
}

size_t buf_copy_at(const struct buf *b, size_t offset, uint8_t *out, size_t len)
{
    size_t done = 0;
    for (const struct chunk *c = seek(b, &offset); c != NULL && done < len; c = c->next, offset = 0) {
        size_t n = c->end - c->start - offset;
        if (n > len - done)
            n = len - done;
        memcpy(out + done, c->data + c->start + offset, n);
        done += n;
    }
    return done;
}

int buf_peek_iov(const struct buf *b, struct iovec *iov, int max)
{
    int n = 0;
    for (struct chunk *c = b->head; c != NULL && n < max; c = c->next) {
        iov[n].iov_base = c->data + c->start;
        iov[n].iov_len = c->end - c->start;
        n++;
    }
    return n;
}

void buf_clear(struct buf *b, struct chunk_pool *p) { buf_drain(b, p, b->len); }
