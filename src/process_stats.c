/* Prometheus' process metrics from /proc (see include/grelay/process_stats.h),
 * as the Go and Python clients compute them. */
#include "grelay/process_stats.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The fields of /proc/self/stat this needs (proc(5) numbers them from 1). */
struct self_stat {
    unsigned long long utime;     /* 14: user time, clock ticks */
    unsigned long long stime;     /* 15: system time, clock ticks */
    unsigned long long starttime; /* 22: start, clock ticks after boot */
    unsigned long long vsize;     /* 23: virtual memory, bytes */
    long long rss;                /* 24: resident pages */
};

static int read_self_stat(struct self_stat *st)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: skip to its last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* Field 3 (state) on: skip 11 fields to reach utime (14). */
    int got =
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
               &st->utime, &st->stime, &st->starttime, &st->vsize, &st->rss);
    return got == 5 ? 0 : -1;
}

/* The boot time in seconds since the epoch (btime of /proc/stat), or 0. */
static unsigned long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return 0;
    char line[512];
    unsigned long long bt = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "btime %llu", &bt) == 1)
            break;
    }
    fclose(f);
    return bt;
}

/* Open descriptors (entries of /proc/self/fd but the one reading it), or -1. */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static void metric(struct gr_sbuf *out, const char *name, const char *type, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void metric(struct gr_sbuf *out, const char *name, const char *type, const char *help, const char *fmt, ...)
{
    sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s ", name, help, name, type, name);
    va_list ap;
    va_start(ap, fmt);
    sbuf_vprintf(out, fmt, ap);
    va_end(ap);
    sbuf_puts(out, "\n");
}

void process_stats_render(struct gr_sbuf *out)
{
    struct self_stat st;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tck > 0 && page > 0 && read_self_stat(&st) == 0) {
        metric(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", "%.2f",
               (double)(st.utime + st.stime) / (double)tck);
        metric(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "%lld",
               st.rss * (long long)page);
        metric(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "%llu", st.vsize);
        unsigned long long bt = boot_time();
        if (bt > 0)
            metric(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
                   "%.2f", (double)bt + (double)st.starttime / (double)tck);
    }
    long fds = open_fds();
    if (fds >= 0)
        metric(out, "process_open_fds", "gauge", "Number of open file descriptors.", "%ld", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metric(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", "%llu",
               (unsigned long long)rl.rlim_cur);
}
