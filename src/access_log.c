/* The access log's buffers and writer thread (access_log.h).
 *
 * Each worker has a shard: a ring of access_log.buffer bytes (fixed when
 * the shard is made, so at start: a reload that changes it says it waits
 * for a restart) with one producer (the worker, at head) and one consumer
 * (the writer thread, at tail), both plain C11 atomics: the worker never
 * takes a lock, never waits and makes no syscall but, when its ring
 * passes a quarter full, one eventfd write that wakes the writer early
 * (and may fail: the writer wakes every ACCESS_LOG_PERIOD_MS anyway). A
 * line that finds no room is dropped and counted.
 *
 * The writer thread owns the file. A pass: the registry (under a mutex
 * the workers never take) gives the shards and their heads; then the
 * reopen flag (SIGUSR1) and a pending reconfiguration are acted on; then
 * each ring's bytes up to that head are written with write(2). The heads
 * are read before the flag, so a line buffered after access_log_reopen()
 * returned always goes to the new file. */
#include "grelay/access_log.h"
#include "grelay/common.h"
#include "grelay/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The writer's pass comes at least this often. */
#define ACCESS_LOG_PERIOD_MS 25
/* access_log_stop waits this long for the writer (a write(2) to a pipe
 * nobody reads blocks); then it leaves it and the rings behind. */
#define ACCESS_LOG_STOP_WAIT_S 5

struct access_log_shard {
    _Alignas(64) _Atomic uint64_t head; /* bytes ever written by the worker (release: the bytes are there) */
    _Atomic uint64_t lines;             /* lines buffered (the worker; relaxed) */
    _Atomic uint64_t dropped;           /* lines that found no room (the worker; relaxed) */
    _Alignas(64) _Atomic uint64_t tail; /* bytes ever taken by the writer (release: the room is free) */
    uint32_t worker_id;                 /* whose it is (messages) */
    size_t slot;                        /* its index in the registry */
    bool dead;                          /* access_log_shard_free was called; the writer frees it (under g.lock) */
    size_t size;                        /* bytes of ring (access_log.buffer when the shard was made) */
    char *ring;                         /* size bytes, offset = position % size */
};

/* The process's access log. */
static struct {
    pthread_mutex_t lock;                                  /* the registry, the retired counts, the handover */
    struct access_log_shard *slots[ACCESS_LOG_MAX_SHARDS]; /* registered shards; NULL: a free slot */
    uint64_t retired_lines;                                /* lines of shards freed already */
    uint64_t retired_dropped;                              /* and their drops */
    _Atomic uint64_t write_dropped;                        /* lines lost to a failed write(2) */
    _Atomic bool on;                                       /* lines are wanted (access_log_on) */
    _Atomic(struct access_fmt *) fmt;                      /* the formatter workers use; NULL: none */
    struct access_fmt **fmts;                              /* every formatter published, freed at stop */
    size_t n_fmts;                                         /* entries of fmts */
    _Atomic bool reopen;                                   /* SIGUSR1: reopen the file at the next pass */
    _Atomic bool stop;                                     /* access_log_stop: a last pass, then exit */
    _Atomic int efd;                                       /* eventfd that wakes the writer early; -1: none */
    size_t ring_size;                                      /* bytes of the rings made from now on (at start) */
    bool running;                                          /* the writer thread runs (under lock) */
    bool abandoned;                                        /* the writer did not stop in time: leak, never free */
    pthread_t thread;                                      /* the writer */
    /* Under lock: a reconfiguration for the writer to take at its next pass. */
    bool change;     /* next_fd and next_path are waiting */
    int next_fd;     /* the new file (-1: the log is off) */
    char *next_path; /* its path (owned), or NULL */
    /* The writer's own while it runs (set before it starts). */
    int fd;             /* where lines go; -1: nowhere (dropped) */
    char *path;         /* what SIGUSR1 reopens (owned); NULL for /dev/stdout, /dev/stderr */
    bool write_failing; /* the last write failed (said once until one succeeds) */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .efd = -1, .ring_size = ACCESS_LOG_BUFFER_DEFAULT, .fd = -1, .next_fd = -1};

/* ---- Shards: the worker's side. ---- */

struct access_log_shard *access_log_shard_new(uint32_t worker_id)
{
    struct access_log_shard *sh = aligned_alloc(64, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    memset(sh, 0, sizeof(*sh));
    sh->worker_id = worker_id;
    sh->size = g.ring_size; /* main thread, as access_log_start */
    sh->ring = malloc(sh->size);
    if (sh->ring == NULL) {
        free(sh);
        return NULL;
    }
    pthread_mutex_lock(&g.lock);
    size_t i = 0;
    while (i < ACCESS_LOG_MAX_SHARDS && g.slots[i] != NULL)
        i++;
    if (i < ACCESS_LOG_MAX_SHARDS) {
        sh->slot = i;
        g.slots[i] = sh;
    }
    pthread_mutex_unlock(&g.lock);
    if (i == ACCESS_LOG_MAX_SHARDS) {
        log_error("access log: more than %d buffers: worker %u logs nothing", ACCESS_LOG_MAX_SHARDS, worker_id);
        free(sh->ring);
        free(sh);
        return NULL;
    }
    return sh;
}

/* Frees a shard out of the registry (under g.lock). */
static void shard_release(struct access_log_shard *sh)
{
    g.slots[sh->slot] = NULL;
    g.retired_lines += atomic_load_explicit(&sh->lines, memory_order_relaxed);
    g.retired_dropped += atomic_load_explicit(&sh->dropped, memory_order_relaxed);
    if (g.abandoned)
        return; /* the writer may still be in a write(2) from this ring */
    free(sh->ring);
    free(sh);
}

void access_log_shard_free(struct access_log_shard *sh)
{
    if (sh == NULL)
        return;
    pthread_mutex_lock(&g.lock);
    if (g.running)
        sh->dead = true; /* the writer flushes it, then frees it */
    else
        shard_release(sh);
    pthread_mutex_unlock(&g.lock);
}

bool access_log_on(void) { return atomic_load_explicit(&g.on, memory_order_relaxed); }

/* +1 on a counter only its worker writes: a relaxed load and store, no
 * locked instruction; readers see it whole. */
static inline void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* Copies line (n bytes) into the ring, or counts it dropped. */
static void shard_push(struct access_log_shard *sh, const char *line, size_t n)
{
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
    uint64_t used = head - tail;
    if (n > sh->size - used) {
        bump(&sh->dropped);
        return;
    }
    size_t off = (size_t)(head % sh->size);
    size_t first = n < sh->size - off ? n : sh->size - off;
    memcpy(sh->ring + off, line, first);
    memcpy(sh->ring, line + first, n - first);
    atomic_store_explicit(&sh->head, head + n, memory_order_release);
    bump(&sh->lines);
    if (used < sh->size / 4 && used + n >= sh->size / 4) {
        int efd = atomic_load_explicit(&g.efd, memory_order_relaxed);
        uint64_t one = 1;
        if (efd >= 0 && write(efd, &one, sizeof(one)) < 0) {
            /* Non-blocking; a full counter means the writer is awake already. */
        }
    }
}

void access_log_write(struct access_log_shard *sh, const struct access_record *r)
{
    const struct access_fmt *f = atomic_load_explicit(&g.fmt, memory_order_acquire);
    if (sh == NULL || f == NULL)
        return;
    char line[ACCESS_LOG_LINE_MAX];
    size_t n = access_fmt_line(f, r, line, sizeof(line));
    shard_push(sh, line, n);
}

uint64_t access_log_dropped(void)
{
    pthread_mutex_lock(&g.lock);
    uint64_t n = g.retired_dropped + atomic_load_explicit(&g.write_dropped, memory_order_relaxed);
    for (size_t i = 0; i < ACCESS_LOG_MAX_SHARDS; i++)
        if (g.slots[i] != NULL)
            n += atomic_load_explicit(&g.slots[i]->dropped, memory_order_relaxed);
    pthread_mutex_unlock(&g.lock);
    return n;
}

uint64_t access_log_lines(void)
{
    pthread_mutex_lock(&g.lock);
    uint64_t n = g.retired_lines;
    for (size_t i = 0; i < ACCESS_LOG_MAX_SHARDS; i++)
        if (g.slots[i] != NULL)
            n += atomic_load_explicit(&g.slots[i]->lines, memory_order_relaxed);
    pthread_mutex_unlock(&g.lock);
    return n;
}

/* ---- The file. ---- */

static bool is_std(const char *path, int *fd)
{
    if (strcmp(path, "/dev/stdout") == 0)
        *fd = STDOUT_FILENO;
    else if (strcmp(path, "/dev/stderr") == 0)
        *fd = STDERR_FILENO;
    else
        return false;
    return true;
}

/* Opens path for appending (a dup of fd 1 or 2 for /dev/stdout and
 * /dev/stderr). Returns the descriptor, or -1 with errno set. */
static int open_log(const char *path)
{
    int std;
    if (is_std(path, &std))
        return fcntl(std, F_DUPFD_CLOEXEC, 3);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/* Writes the n buffers of iov whole (iov is used up); false when the
 * file takes no more (the error said once). EINTR and partial writes go
 * on; a non-blocking descriptor that is full is waited for, a bounded
 * time. One writev for both parts of a ring that wraps: with O_APPEND a
 * line is never split by another process's write (a binary upgrade's old
 * and new process append to the same file). */
static bool write_all(int fd, struct iovec *iov, int n)
{
    int waits = 0;
    while (n > 0) {
        ssize_t k = writev(fd, iov, n);
        if (k > 0) {
            size_t left = (size_t)k; /* what of iov was written */
            while (n > 0 && left >= iov->iov_len) {
                left -= iov->iov_len;
                iov++;
                n--;
            }
            if (n > 0) {
                iov->iov_base = (char *)iov->iov_base + left;
                iov->iov_len -= left;
            }
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waits++ < 50) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            (void)poll(&pf, 1, 100);
            continue;
        }
        if (!g.write_failing)
            log_error("access log: write failed: %s (lines are dropped until it works again)",
                      k < 0 ? strerror(errno) : "nothing written");
        g.write_failing = true;
        return false;
    }
    if (g.write_failing)
        log_info("access log: writing again");
    g.write_failing = false;
    return true;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t c = 0;
    for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        c++;
    return c;
}

/* Writes sh's bytes from its tail up to head, then frees the room. */
static void drain_shard(struct access_log_shard *sh, uint64_t head)
{
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    if (tail == head)
        return;
    size_t off = (size_t)(tail % sh->size), n = (size_t)(head - tail);
    size_t first = n < sh->size - off ? n : sh->size - off;
    struct iovec iov[2] = {{sh->ring + off, first}, {sh->ring, n - first}};
    if (g.fd < 0 || !write_all(g.fd, iov, n > first ? 2 : 1)) {
        uint64_t lost = count_lines(sh->ring + off, first) + count_lines(sh->ring, n - first);
        atomic_fetch_add_explicit(&g.write_dropped, lost, memory_order_relaxed);
    }
    atomic_store_explicit(&sh->tail, head, memory_order_release); /* the room is the worker's again */
}

/* SIGUSR1: the file at the path again (logrotate renamed the old one). */
static void reopen_file(void)
{
    if (g.path == NULL)
        return; /* /dev/stdout and /dev/stderr stay */
    int fd = open_log(g.path);
    if (fd < 0) {
        log_error("access log: cannot reopen %s: %s (still writing to the old file)", g.path, strerror(errno));
        return;
    }
    if (g.fd >= 0)
        close(g.fd);
    g.fd = fd;
    log_info("access log: reopened %s", g.path);
}

/* A reconfiguration handed over by access_log_reconfigure (under g.lock). */
static void take_change(void)
{
    if (!g.change)
        return;
    if (g.fd >= 0)
        close(g.fd);
    free(g.path);
    g.fd = g.next_fd;
    g.path = g.next_path;
    g.next_fd = -1;
    g.next_path = NULL;
    g.change = false;
}

/* One pass: every shard's bytes buffered so far go to the file. */
static void writer_pass(void)
{
    static struct access_log_shard *live[ACCESS_LOG_MAX_SHARDS];
    static uint64_t heads[ACCESS_LOG_MAX_SHARDS];
    static bool dead[ACCESS_LOG_MAX_SHARDS];
    size_t n = 0;
    pthread_mutex_lock(&g.lock);
    for (size_t i = 0; i < ACCESS_LOG_MAX_SHARDS; i++) {
        struct access_log_shard *sh = g.slots[i];
        if (sh == NULL)
            continue;
        dead[n] = sh->dead; /* read first: a dead shard's head is final */
        heads[n] = atomic_load_explicit(&sh->head, memory_order_acquire);
        live[n++] = sh;
    }
    bool reopen = atomic_exchange_explicit(&g.reopen, false, memory_order_acq_rel);
    take_change();
    pthread_mutex_unlock(&g.lock);
    if (reopen)
        reopen_file();
    for (size_t i = 0; i < n; i++)
        drain_shard(live[i], heads[i]);
    pthread_mutex_lock(&g.lock);
    for (size_t i = 0; i < n; i++)
        if (dead[i])
            shard_release(live[i]);
    pthread_mutex_unlock(&g.lock);
}

static void *writer_main(void *arg)
{
    (void)arg;
    log_set_thread_name("alog");
    int efd = atomic_load_explicit(&g.efd, memory_order_relaxed);
    for (;;) {
        bool stopping = atomic_load_explicit(&g.stop, memory_order_acquire);
        writer_pass();
        if (stopping)
            break;
        struct pollfd pf = {.fd = efd, .events = POLLIN};
        if (poll(&pf, 1, ACCESS_LOG_PERIOD_MS) > 0) {
            uint64_t v;
            if (read(efd, &v, sizeof(v)) < 0) {
                /* Non-blocking: another wake took it. */
            }
        }
    }
    return NULL;
}

/* ---- Starting, changing, stopping: the main thread. ---- */

/* Opens cfg's file and builds its formatter. */
static int prepare(const struct gr_access_log_cfg *cfg, int *fd, char **path, struct access_fmt **f, char *err,
                   size_t errlen)
{
    int std;
    *fd = open_log(cfg->path);
    if (*fd < 0) {
        snprintf(err, errlen, "access_log: cannot open %s: %s", cfg->path, strerror(errno));
        return GR_ERR_CONFIG;
    }
    bool nomem = false;
    *path = NULL;
    if (!is_std(cfg->path, &std))
        nomem = (*path = strdup(cfg->path)) == NULL;
    *f = access_fmt_new(cfg);
    if (nomem || *f == NULL) {
        close(*fd);
        free(*path);
        access_fmt_free(*f);
        snprintf(err, errlen, "access_log: out of memory");
        return GR_ERR_NOMEM;
    }
    return GR_OK;
}

/* Keeps f for access_log_stop and makes it the one workers use. */
static int publish(struct access_fmt *f)
{
    struct access_fmt **v = realloc(g.fmts, (g.n_fmts + 1) * sizeof(*v));
    if (v == NULL)
        return GR_ERR_NOMEM;
    g.fmts = v;
    g.fmts[g.n_fmts++] = f;
    atomic_store_explicit(&g.fmt, f, memory_order_release);
    atomic_store_explicit(&g.on, true, memory_order_relaxed);
    return GR_OK;
}

/* Starts the writer on fd (under no lock; g.running false). */
static int start_writer(int fd, char *path, char *err, size_t errlen)
{
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        snprintf(err, errlen, "access_log: eventfd: %s", strerror(errno));
        return GR_ERR_IO;
    }
    g.fd = fd;
    g.path = path;
    g.write_failing = false;
    atomic_store(&g.efd, efd);
    atomic_store(&g.stop, false);
    atomic_store(&g.reopen, false);
    /* The thread takes no signal: the main loop handles them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g.thread, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "access_log: cannot start the writer thread: %s", strerror(rc));
        atomic_store(&g.efd, -1);
        close(efd);
        g.fd = -1;
        g.path = NULL;
        return GR_ERR_IO;
    }
    pthread_mutex_lock(&g.lock);
    g.running = true;
    pthread_mutex_unlock(&g.lock);
    return GR_OK;
}

static size_t ring_size_of(const struct gr_access_log_cfg *cfg)
{
    return cfg->buffer != 0 ? cfg->buffer : ACCESS_LOG_BUFFER_DEFAULT;
}

int access_log_start(const struct gr_access_log_cfg *cfg, char *err, size_t errlen)
{
    g.ring_size = ring_size_of(cfg); /* before the workers make their shards */
    return access_log_reconfigure(cfg, err, errlen);
}

static void wake_writer(void)
{
    int efd = atomic_load_explicit(&g.efd, memory_order_relaxed);
    uint64_t one = 1;
    if (efd >= 0 && write(efd, &one, sizeof(one)) < 0) {
        /* Non-blocking: the writer is awake already. */
    }
}

/* Hands fd and path to the running writer (closing what a previous
 * reconfiguration left untaken). */
static void hand_over(int fd, char *path)
{
    pthread_mutex_lock(&g.lock);
    if (g.change && g.next_fd >= 0)
        close(g.next_fd);
    if (g.change)
        free(g.next_path);
    g.change = true;
    g.next_fd = fd;
    g.next_path = path;
    pthread_mutex_unlock(&g.lock);
    wake_writer();
}

int access_log_reconfigure(const struct gr_access_log_cfg *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&g.lock);
    bool running = g.running;
    pthread_mutex_unlock(&g.lock);
    if (!cfg->set) {
        atomic_store_explicit(&g.on, false, memory_order_relaxed);
        if (running)
            hand_over(-1, NULL); /* what is buffered is dropped, counted */
        return GR_OK;
    }
    if (ring_size_of(cfg) != g.ring_size) /* the workers' rings are theirs: made once */
        log_warn("reload: access_log: buffer %zu waits for a restart; each worker's ring stays %zu bytes",
                 ring_size_of(cfg), g.ring_size);
    int fd;
    char *path;
    struct access_fmt *f;
    int rc = prepare(cfg, &fd, &path, &f, err, errlen);
    if (rc != GR_OK)
        return rc;
    if (running) {
        hand_over(fd, path);
    } else if ((rc = start_writer(fd, path, err, errlen)) != GR_OK) {
        close(fd);
        free(path);
        access_fmt_free(f);
        return rc;
    }
    if (publish(f) != GR_OK) {
        access_fmt_free(f); /* the file stays the writer's; access_log_stop closes it */
        snprintf(err, errlen, "access_log: out of memory");
        return GR_ERR_NOMEM;
    }
    return GR_OK;
}

void access_log_reopen(void) { atomic_store_explicit(&g.reopen, true, memory_order_release); }

/* Waits for the writer, ACCESS_LOG_STOP_WAIT_S at most. */
static bool join_writer(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ACCESS_LOG_STOP_WAIT_S;
    if (pthread_timedjoin_np(g.thread, NULL, &until) == 0)
        return true;
    log_error("access log: the writer is stuck in a write for %d s: leaving it (lines still buffered are lost)",
              ACCESS_LOG_STOP_WAIT_S);
    pthread_detach(g.thread);
    return false;
}

void access_log_stop(void)
{
    atomic_store_explicit(&g.on, false, memory_order_relaxed);
    pthread_mutex_lock(&g.lock);
    bool running = g.running;
    pthread_mutex_unlock(&g.lock);
    if (!running)
        return;
    atomic_store_explicit(&g.stop, true, memory_order_release);
    wake_writer();
    bool joined = join_writer();
    pthread_mutex_lock(&g.lock);
    g.running = false;
    g.abandoned = !joined;
    for (size_t i = 0; i < ACCESS_LOG_MAX_SHARDS; i++)
        if (g.slots[i] != NULL && g.slots[i]->dead)
            shard_release(g.slots[i]);
    if (joined)
        take_change(); /* one that came after the last pass */
    pthread_mutex_unlock(&g.lock);
    if (!joined)
        return; /* the writer may still use the file, a ring and a formatter: all left as they are */
    if (g.fd >= 0)
        close(g.fd);
    g.fd = -1;
    free(g.path);
    g.path = NULL;
    close(atomic_exchange(&g.efd, -1));
    atomic_store_explicit(&g.fmt, NULL, memory_order_release);
    for (size_t i = 0; i < g.n_fmts; i++)
        access_fmt_free(g.fmts[i]);
    free(g.fmts);
    g.fmts = NULL;
    g.n_fmts = 0;
}
