/* Chunk queues and the per-worker chunk free list.
 *
 * Under AddressSanitizer a chunk on the free list is poisoned whole, its
 * next link included (review F14): a read or write through a pointer into
 * a drained chunk is reported. The list unpoisons a chunk before it reads
 * the link, when the chunk leaves the list. */
#include "grelay/buf.h"
#include "grelay/common.h"

#include <stdlib.h>
#include <string.h>

void buf_pool_init(struct chunk_pool *p, size_t max_free)
{
    p->free = NULL;
    p->n_free = p->n_free_low = 0;
    p->max_free = max_free;
    p->n_out = 0;
}

/* Takes the first chunk off the free list (which is not empty). */
static struct chunk *pop_free(struct chunk_pool *p)
{
    struct chunk *c = p->free;
    GR_UNPOISON(c, sizeof(*c));
    p->free = c->next;
    return c;
}

static size_t chunk_pool_free(struct chunk_pool *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(pop_free(p));
    p->n_free -= n;
    return n;
}

size_t buf_pool_trim(struct chunk_pool *p, size_t keep)
{
    size_t unused = p->n_free_low, over = p->n_free > keep ? p->n_free - keep : 0;
    size_t freed = chunk_pool_free(p, unused < over ? unused : over);
    p->n_free_low = p->n_free;
    return freed;
}

void buf_pool_destroy(struct chunk_pool *p) { chunk_pool_free(p, p->n_free); }

static struct chunk *chunk_get(struct chunk_pool *p)
{
    struct chunk *c;
    if (p->free != NULL) {
        c = pop_free(p);
        if (--p->n_free < p->n_free_low)
            p->n_free_low = p->n_free;
    } else {
        c = malloc(sizeof(*c));
        if (c == NULL)
            return NULL;
    }
    c->next = NULL;
    c->start = c->end = 0;
    p->n_out++;
    return c;
}

static void chunk_put(struct chunk_pool *p, struct chunk *c)
{
    p->n_out--;
    if (p->n_free >= p->max_free) {
        free(c);
        return;
    }
    c->next = p->free;
    p->free = c;
    p->n_free++;
    GR_POISON(c, sizeof(*c));
}

int buf_append(struct buf *b, struct chunk_pool *p, const uint8_t *data, size_t len)
{
    while (len > 0) {
        struct chunk *t = b->tail;
        if (t == NULL || t->end == CHUNK_SIZE) {
            t = chunk_get(p);
            if (t == NULL)
                return GR_ERR_NOMEM;
            if (b->tail != NULL)
                b->tail->next = t;
            else
                b->head = t;
            b->tail = t;
        }
        size_t n = CHUNK_SIZE - t->end;
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

size_t buf_copy_at(const struct buf *b, size_t offset, uint8_t *out, size_t len)
{
    size_t done = 0;
    for (struct chunk *c = b->head; c != NULL && done < len; c = c->next) {
        size_t avail = c->end - c->start;
        if (offset >= avail) {
            offset -= avail;
            continue;
        }
        size_t n = avail - offset;
        if (n > len - done)
            n = len - done;
        memcpy(out + done, c->data + c->start + offset, n);
        done += n;
        offset = 0;
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
