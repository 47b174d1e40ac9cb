/* The access log: one line per call, written when the call ends. A worker
 * formats its line into its own buffer and never blocks: a writer thread
 * takes the buffers and writes them to the file; when it falls behind,
 * lines are dropped and counted (grelay_access_log_dropped_total), never
 * the call slowed. SIGUSR1 reopens the file (logrotate). docs/access-log.md
 * says what each field means.
 *
 * Who owns what: access_log.c owns the writer thread, the file and every
 * formatter it published (kept until access_log_stop, as a worker may be
 * formatting with an older one); a worker owns its shard (a ring of
 * bytes: the worker writes at its head, the writer thread reads at its
 * tail). access_log_fmt.c turns a record into a line. */
#ifndef GRELAY_ACCESS_LOG_H
#define GRELAY_ACCESS_LOG_H

#include "grelay/config_types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct access_log_shard;

/* A string that may not be NUL-terminated (request headers); p NULL: absent. */
struct access_str {
    const char *p;
    size_t n;
};

/* One finished call, as the worker hands it over; the strings need only
 * live until access_log_write returns. docs/access-log.md says what each
 * field means. */
struct access_record {
    int64_t start_ms;               /* wall clock at the request headers, ms since the epoch */
    double duration_ms;             /* request headers to the last response byte */
    const char *listener;           /* listener name */
    const char *protocol;           /* "h2", "http1", "grpc-web", "grpc-web-text" */
    struct access_str authority;    /* :authority (or Host) */
    struct access_str path;         /* :path */
    int grpc_code;                  /* the status the client got, 0..16; -1: none (a plain HTTP answer) */
    struct access_str grpc_message; /* the grpc-message the client got, or absent */
    int http_status;                /* :status sent to the client; 0: none (reset) */
    const char *route;              /* route name, or "none" */
    const char *cluster;            /* cluster name, or "none" */
    const char *upstream;           /* the endpoint that answered ("10.0.0.1:50051"), or NULL */
    uint32_t attempts;              /* attempts upstream (0: none was made) */
    uint64_t request_bytes;         /* request body bytes from the client */
    uint64_t response_bytes;        /* response body bytes to the client */
    struct access_str grpc_timeout; /* the grpc-timeout the client sent, as sent */
    struct access_str request_id;   /* x-request-id, as sent or generated */
    struct access_str user_agent;   /* user-agent */
    const char *peer;               /* the client's address, "ip:port" */
};

/* Starts the writer thread for cfg (nothing when !cfg->set) and sets the
 * size of the rings made from now on (cfg->buffer, or
 * ACCESS_LOG_BUFFER_DEFAULT). Main thread, at start, before the workers.
 * Returns GR_OK, or an error with a message in err (the file cannot be
 * opened). */
int access_log_start(const struct gr_access_log_cfg *cfg, char *err, size_t errlen);
/* A reload: a new path or format from now on (the file reopened). The
 * rings keep their size: a new buffer is logged as waiting for a restart. */
int access_log_reconfigure(const struct gr_access_log_cfg *cfg, char *err, size_t errlen);
/* SIGUSR1: the writer reopens the file at its next pass. Any thread. */
void access_log_reopen(void);
/* Flushes what is buffered and stops the writer thread (exit). */
void access_log_stop(void);
/* Whether lines are wanted: one relaxed load, for the worker to skip
 * building a record. */
bool access_log_on(void);
/* A worker's buffer (worker_init): a ring of the size access_log_start
 * set (ACCESS_LOG_BUFFER_DEFAULT before it). NULL when out
 * of memory or past ACCESS_LOG_MAX_SHARDS (that worker logs nothing).
 * Freed by access_log_shard_free once its worker no longer writes (a
 * running writer thread still flushes it first). Main thread. */
struct access_log_shard *access_log_shard_new(uint32_t worker_id);
void access_log_shard_free(struct access_log_shard *sh);
/* Formats r into sh; never blocks (a full buffer drops the line, counted).
 * sh may be NULL (nothing is written). The worker's thread only. */
void access_log_write(struct access_log_shard *sh, const struct access_record *r);
/* Lines dropped so far (a full buffer, or a failed write(2)), and lines
 * buffered, all workers together. Any thread but a worker's (a short lock
 * the workers never take). */
uint64_t access_log_dropped(void);
uint64_t access_log_lines(void);

/* Bytes of a worker's ring without access_log.buffer, and its bounds; a
 * line that finds less room is dropped. */
#define ACCESS_LOG_BUFFER_DEFAULT 4194304u /* 4 MiB */
#define ACCESS_LOG_BUFFER_MIN 65536u       /* 64 KiB */
#define ACCESS_LOG_BUFFER_MAX 268435456u   /* 256 MiB */
/* Shards alive at once (workers, 256 at most, and tests). */
#define ACCESS_LOG_MAX_SHARDS 1024
/* Bytes of one line at most (the newline included): each field has a cap
 * of its own, and a longer value is cut and ends with "...". */
#define ACCESS_LOG_LINE_MAX 8192

/* ---- Formatting (access_log_fmt.c): what access_log_write runs, and the
 * config check of a template. ---- */

/* An immutable formatter: the format and, for text, the parsed template. */
struct access_fmt;

/* Checks a text template: every %NAME% one of the operators (the JSON
 * keys in upper case; %START_TIME% for time; %% for a percent sign).
 * Returns GR_OK, or GR_ERR_CONFIG with what is wrong in err (the operator
 * and its offset). config_ops.c calls it at load. */
int access_log_template_check(const char *tmpl, char *err, size_t errlen);
/* A formatter for cfg (the template checked already), or NULL when out
 * of memory. Owns copies of what it needs from cfg. */
struct access_fmt *access_fmt_new(const struct gr_access_log_cfg *cfg);
void access_fmt_free(struct access_fmt *f);
/* Writes r's line into out (cap bytes, at least 2), newline included, and
 * returns its length. Never more than cap bytes; no allocation. */
size_t access_fmt_line(const struct access_fmt *f, const struct access_record *r, char *out, size_t cap);
/* ms since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-12-01T18:04:30.123Z"); out needs 32 bytes. Returns the length. */
size_t access_log_time(int64_t ms, char *out);
/* Appends s (n bytes, any bytes) as a JSON string, quotes included, to
 * out (cap bytes): quotes, backslashes and control bytes escaped, invalid
 * UTF-8 bytes as \u00XX. Past cap the string is cut (at a character) and
 * ends with "..." inside the quotes. Returns the bytes written (<= cap;
 * 0 when cap < 5). */
size_t access_log_json_str(char *out, size_t cap, const char *s, size_t n);

#endif
