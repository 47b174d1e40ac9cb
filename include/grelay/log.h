/* Error log: leveled lines on stderr, each stamped with time and worker. */
#ifndef GRELAY_LOG_H
#define GRELAY_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* The level logged at and above; set by the main thread (start, reload,
 * POST /log_level), read by every thread: atomic, relaxed. */
extern _Atomic enum log_level log_threshold;

/* What an error code (enum gr_err) means, for messages ("out of memory");
 * "unknown error" for a value that is not one. Never NULL, never freed. */
const char *log_strerror(int err);
/* Parses "error", "warn", "info" or "debug"; returns 0 or GR_ERR_CONFIG. */
int log_level_parse(const char *s, enum log_level *out);
/* Names this thread in log lines ("main", "w0", ...). */
void log_set_thread_name(const char *name);
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)                                                                                                  \
    do {                                                                                                               \
        if (log_threshold >= LOG_WARN)                                                                                 \
            log_write(LOG_WARN, __VA_ARGS__);                                                                          \
    } while (0)
#define log_info(...)                                                                                                  \
    do {                                                                                                               \
        if (log_threshold >= LOG_INFO)                                                                                 \
            log_write(LOG_INFO, __VA_ARGS__);                                                                          \
    } while (0)
#define log_debug(...)                                                                                                 \
    do {                                                                                                               \
        if (log_threshold >= LOG_DEBUG)                                                                                \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                                         \
    } while (0)

#endif
