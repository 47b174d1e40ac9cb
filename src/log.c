/* Error log on stderr. One write(2) per line so lines of threads never mix. */
#include "grelay/log.h"
#include "grelay/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic enum log_level log_threshold = LOG_INFO;
static __thread char thread_name[16] = "main";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* The switch has a case for every enum gr_err value and no default, so
 * -Wswitch (in -Wall) flags a value added without a name here. */
const char *log_strerror(int err)
{
    switch ((enum gr_err)err) {
    case GR_OK: return "success";
    case GR_ERR_NOMEM: return "out of memory";
    case GR_ERR_IO: return "system call failed";
    case GR_ERR_PROTO: return "protocol error";
    case GR_ERR_CONFIG: return "invalid configuration";
    case GR_ERR_LIMIT: return "limit reached";
    case GR_ERR_CLOSED: return "peer closed";
    case GR_ERR_AGAIN: return "not yet";
    }
    return "unknown error";
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < GR_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return GR_OK;
        }
    }
    return GR_ERR_CONFIG;
}

void log_set_thread_name(const char *name) { snprintf(thread_name, sizeof(thread_name), "%s", name); }

void log_write(enum log_level lvl, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl], thread_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
