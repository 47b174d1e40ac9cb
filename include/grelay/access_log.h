/* The access log: one line per call, written when the call ends. A worker
 * formats its line into its own buffer and never blocks: a writer thread
 * takes the buffers and writes them to the file; when it falls behind,
 * lines are dropped and counted (grelay_access_log_dropped_total), never
 * the call slowed. SIGUSR1 reopens the file (logrotate). */
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
 * live until access_log_write returns. docs/observability.md says what
 * each field means. */
struct access_record {
    int64_t start_ms;     /* wall clock at the request headers, ms since the epoch */
    double duration_ms;   /* request headers to the last response byte */
    const char *listener; /* listener name */
    const char *protocol; /* "h2", "http1", "grpc-web", "grpc-web-text" */
    struct access_str authority;
    struct access_str path;
    int grpc_code; /* the status the client got, 0..16; -1: none (a plain HTTP answer) */
    struct access_str grpc_message;
    int http_status;                /* :status sent to the client; 0: none (reset) */
    const char *route;              /* route name, or "none" */
    const char *cluster;            /* cluster name, or "none" */
    const char *upstream;           /* the endpoint that answered ("10.0.0.1:50051"), or NULL */
    uint32_t attempts;              /* attempts upstream (0: none was made) */
    uint64_t request_bytes;         /* request body bytes from the client */
    uint64_t response_bytes;        /* response body bytes to the client */
    struct access_str grpc_timeout; /* the grpc-timeout the client sent, as sent */
    struct access_str request_id;   /* x-request-id, as sent or generated */
    struct access_str user_agent;
    const char *peer; /* the client's address, "ip:port" */
};

/* Starts the writer thread for cfg (nothing when !cfg->set). Main thread,
 * at start. Returns GR_OK, or an error with a message in err (the file
 * cannot be opened). */
int access_log_start(const struct gr_access_log_cfg *cfg, char *err, size_t errlen);
/* A reload: a new path or format from now on (the file reopened). */
int access_log_reconfigure(const struct gr_access_log_cfg *cfg, char *err, size_t errlen);
/* SIGUSR1: the writer reopens the file at its next pass. Any thread. */
void access_log_reopen(void);
/* Flushes what is buffered and stops the writer thread (exit). */
void access_log_stop(void);
/* Whether lines are wanted: one relaxed load, for the worker to skip
 * building a record. */
bool access_log_on(void);
/* A worker's buffer (worker_init); freed by access_log_shard_free. */
struct access_log_shard *access_log_shard_new(uint32_t worker_id);
void access_log_shard_free(struct access_log_shard *sh);
/* Formats r into sh; never blocks (a full buffer drops the line, counted). */
void access_log_write(struct access_log_shard *sh, const struct access_record *r);
/* Lines dropped so far, and lines written, all workers together. */
uint64_t access_log_dropped(void);
uint64_t access_log_lines(void);

#endif
