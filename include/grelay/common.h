/* Shared basics: error codes, container_of, intrusive lists, file positions. */
#ifndef GRELAY_COMMON_H
#define GRELAY_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

#define GRELAY_VERSION "0.1.0"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define GR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define gr_likely(x) __builtin_expect(!!(x), 1)
#define gr_unlikely(x) __builtin_expect(!!(x), 0)

/* AddressSanitizer sees only malloc and free. Memory a free list of ours
 * keeps for reuse is marked with GR_POISON while it waits, so any access
 * is reported (use-after-poison), and GR_UNPOISON before it is handed out
 * again. Without ASan both are no-ops. GCC and clang define
 * __SANITIZE_ADDRESS__; older clang only answers __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define GR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GR_ASAN 1
#endif
#endif
#if defined(GR_ASAN)
#include <sanitizer/asan_interface.h>
#define GR_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define GR_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define GR_POISON(p, n) ((void)(p), (void)(n))
#define GR_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Errors returned by functions that can fail: 0 or one of these. A new one
 * needs its name in gr_strerror (log.c), or -Wswitch fails the build. */
enum gr_err {
    GR_OK = 0,
    GR_ERR_NOMEM = -1,  /* allocation failed */
    GR_ERR_IO = -2,     /* a system call failed; errno says which */
    GR_ERR_PROTO = -3,  /* the peer broke the protocol */
    GR_ERR_CONFIG = -4, /* the configuration is invalid */
    GR_ERR_LIMIT = -5,  /* a configured bound was reached */
    GR_ERR_CLOSED = -6, /* the other side is gone */
    GR_ERR_AGAIN = -7,  /* not now: the caller is told when to try again */
};

/* A place in a configuration file, 1-based (config.h stores them, the YAML
 * walker in config_yaml.h writes them and quotes them in messages). */
struct gr_pos {
    uint32_t line; /* line, from 1 */
    uint32_t col;  /* column, from 1 */
};

/* Monotonic microseconds: deadlines and ejections are absolute on this clock. */
static inline uint64_t gr_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000ull;
}

/* xorshift64: fast, per-thread state, not for secrets. */
static inline uint64_t gr_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Intrusive doubly linked list; an empty list points at itself. */
struct gr_list {
    struct gr_list *prev; /* previous element, or the head */
    struct gr_list *next; /* next element, or the head */
};

static inline void gr_list_init(struct gr_list *l) { l->prev = l->next = l; }
static inline bool gr_list_empty(const struct gr_list *l) { return l->next == l; }
static inline bool gr_list_linked(const struct gr_list *e) { return e->next != NULL && e->next != e; }

static inline void gr_list_insert_head(struct gr_list *head, struct gr_list *e)
{
    e->next = head->next;
    e->prev = head;
    head->next->prev = e;
    head->next = e;
}
static inline void gr_list_insert_tail(struct gr_list *head, struct gr_list *e)
{
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}

/* Unlinks e and leaves it self-linked, so unlinking twice is harmless. */
static inline void gr_list_remove(struct gr_list *e)
{
    if (e->next == NULL)
        return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}

#define gr_list_for_each_safe(pos, tmp, head)                                                                          \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
