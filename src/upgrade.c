/* Binary upgrade (SIGUSR2): the old process starts the new one with the
 * listening sockets inherited; the new one takes them (see
 * include/grelay/upgrade.h). */
#include "grelay/upgrade.h"
#include "grelay/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* At most this many sockets are handed over (workers x listeners). */
#define UPGRADE_MAX_SOCKS 4096

/* ---- the new process ---- */

/* One inherited socket. */
struct inherited {
    char name[128]; /* its listener's name in the old process */
    int fd;         /* -1 once taken or closed */
};

static struct inherited *inh; /* the sockets handed over */
static size_t n_inh;          /* entries of inh */
static int ready_out = -1;    /* GRELAY_UPGRADE_READY_FD, until upgrade_ready */

/* A socket the old process may hand over: a listening stream socket. */
static bool listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* Parses one "name=fd,fd" entry of GRELAY_LISTEN_FDS into inh. */
static void inherit_entry(char *entry)
{
    char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry || (size_t)(eq - entry) >= sizeof(inh[0].name)) {
        log_warn("upgrade: %s: bad entry '%s' (want name=fd,fd)", UPGRADE_ENV_FDS, entry);
        return;
    }
    *eq = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(eq + 1, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        long fd = strtol(tok, &end, 10);
        if (errno != 0 || *end != '\0' || fd < 0 || fd > INT_MAX || !listening((int)fd)) {
            log_warn("upgrade: listener %s: '%s' is not an inherited listening socket; skipped", entry, tok);
            continue;
        }
        if (n_inh == UPGRADE_MAX_SOCKS) {
            log_warn("upgrade: more than %d inherited sockets; fd %ld closed", UPGRADE_MAX_SOCKS, fd);
            close((int)fd);
            continue;
        }
        struct inherited *in = &inh[n_inh++];
        snprintf(in->name, sizeof(in->name), "%s", entry);
        in->fd = (int)fd;
        (void)fcntl(in->fd, F_SETFD, FD_CLOEXEC);
    }
}

size_t upgrade_inherit(void)
{
    const char *rfd = getenv(UPGRADE_ENV_READY);
    if (rfd != NULL) {
        char *end;
        long fd = strtol(rfd, &end, 10);
        if (*end == '\0' && fd >= 0 && fd <= INT_MAX && fcntl((int)fd, F_GETFD) >= 0) {
            ready_out = (int)fd;
            (void)fcntl(ready_out, F_SETFD, FD_CLOEXEC);
        } else {
            log_warn("upgrade: %s=%s is not an open descriptor", UPGRADE_ENV_READY, rfd);
        }
    }
    const char *v = getenv(UPGRADE_ENV_FDS);
    char *copy = v != NULL ? strdup(v) : NULL;
    if (copy != NULL && (inh = calloc(UPGRADE_MAX_SOCKS, sizeof(*inh))) != NULL) {
        char *save = NULL;
        for (char *e = strtok_r(copy, ";", &save); e != NULL; e = strtok_r(NULL, ";", &save))
            inherit_entry(e);
    }
    free(copy);
    unsetenv(UPGRADE_ENV_FDS);
    unsetenv(UPGRADE_ENV_READY);
    if (n_inh > 0)
        log_info("upgrade: %zu listening socket%s inherited", n_inh, n_inh == 1 ? "" : "s");
    return n_inh;
}

/* fd is bound to addr: same family, port and address. */
static bool bound_to(int fd, const struct gr_addr *addr)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != addr->ss.ss_family)
        return false;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss, *b = (const struct sockaddr_in *)&addr->ss;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss, *b = (const struct sockaddr_in6 *)&addr->ss;
        return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    return false;
}

int upgrade_take(const char *name, const struct gr_addr *addr)
{
    for (size_t i = 0; i < n_inh; i++) {
        if (inh[i].fd >= 0 && strcmp(inh[i].name, name) == 0 && bound_to(inh[i].fd, addr)) {
            int fd = inh[i].fd;
            inh[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

size_t upgrade_count(const char *name, const struct gr_addr *addr)
{
    size_t n = 0;
    for (size_t i = 0; i < n_inh; i++)
        n += inh[i].fd >= 0 && strcmp(inh[i].name, name) == 0 && bound_to(inh[i].fd, addr);
    return n;
}

size_t upgrade_left(void)
{
    size_t n = 0;
    for (size_t i = 0; i < n_inh; i++)
        n += inh[i].fd >= 0;
    return n;
}

bool upgrade_ready(void)
{
    for (size_t i = 0; i < n_inh; i++) {
        if (inh[i].fd >= 0) {
            log_warn("upgrade: inherited socket of listener %s is not in this config (or moved); closed", inh[i].name);
            close(inh[i].fd);
            inh[i].fd = -1;
        }
    }
    free(inh);
    inh = NULL;
    n_inh = 0;
    if (ready_out < 0)
        return false;
    ssize_t n;
    do {
        n = write(ready_out, "R", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        log_warn("upgrade: cannot tell the old process we are ready: %s", strerror(errno));
    close(ready_out);
    ready_out = -1;
    return true;
}

/* ---- the old process ---- */

static char self_exe[PATH_MAX]; /* the binary this process was started from */
static char **self_argv;        /* its argv */

int upgrade_init(char **argv)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        return GR_ERR_IO;
    self_exe[n] = '\0';
    self_argv = argv;
    return GR_OK;
}

/* The new process's environment: ours without stale hand-over variables,
 * plus fds_var and ready_var. Built before fork (the child may not
 * allocate). Returns NULL when out of memory. */
static char **child_env(char *fds_var, char *ready_var)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 3, sizeof(*env));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], UPGRADE_ENV_FDS "=", sizeof(UPGRADE_ENV_FDS)) != 0 &&
            strncmp(environ[i], UPGRADE_ENV_READY "=", sizeof(UPGRADE_ENV_READY)) != 0)
            env[k++] = environ[i];
    }
    env[k++] = fds_var;
    env[k++] = ready_var;
    env[k] = NULL;
    return env;
}

/* "GRELAY_LISTEN_FDS=a=3,4;b=5", grouping socks by listener (each name
 * once, in the order first seen). Returns NULL when out of memory. */
static char *fds_value(const struct upgrade_sock *socks, size_t n)
{
    size_t cap = sizeof(UPGRADE_ENV_FDS) + 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(socks[i].listener) + 16;
    char *s = malloc(cap), *p = s;
    if (s == NULL)
        return NULL;
    p += snprintf(p, cap, "%s=", UPGRADE_ENV_FDS);
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(socks[j].listener, socks[i].listener) == 0;
        if (seen)
            continue;
        p += snprintf(p, cap - (size_t)(p - s), "%s%s=", p[-1] == '=' ? "" : ";", socks[i].listener);
        const char *sep = "";
        for (size_t j = i; j < n; j++) {
            if (strcmp(socks[j].listener, socks[i].listener) == 0) {
                p += snprintf(p, cap - (size_t)(p - s), "%s%d", sep, socks[j].fd);
                sep = ",";
            }
        }
    }
    return s;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void exec_child(const struct upgrade_sock *socks, size_t n, int ready_w, char **env)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (size_t i = 0; i < n; i++)
        fcntl(socks[i].fd, F_SETFD, 0);
    fcntl(ready_w, F_SETFD, 0);
    execve(self_exe, self_argv, env);
    _exit(127);
}

static void upgrade_end(struct upgrade *u)
{
    ev_io_stop(u->loop, &u->ready);
    ev_timer_stop(u->loop, &u->timeout);
    if (u->ready_fd >= 0)
        close(u->ready_fd);
    u->ready_fd = -1;
}

static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct upgrade *u = container_of(w, struct upgrade, ready);
    char b;
    ssize_t n = read(u->ready_fd, &b, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    upgrade_end(u); /* without the byte: the new process is exiting, on_child says how */
    if (n == 1) {
        u->done = true;
        log_info("upgrade: new process %d is serving; this one (%d) drains", (int)u->pid, (int)getpid());
        u->on_ready(u);
    }
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct upgrade *u = container_of(w, struct upgrade, child);
    ev_child_stop(loop, w);
    if (!u->done) {
        int st = w->rstatus;
        log_error("upgrade: new process %d exited (%s %d) before it was ready; this one goes on serving", (int)u->pid,
                  WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        upgrade_end(u);
    }
    u->pid = 0;
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct upgrade *u = container_of(t, struct upgrade, timeout);
    log_error("upgrade: new process %d not ready after %.0f s: stopped; this one goes on serving", (int)u->pid,
              UPGRADE_READY_TIMEOUT_S);
    upgrade_end(u);
    if (u->pid > 0)
        kill(u->pid, SIGTERM);
}

int upgrade_start(struct upgrade *u, struct ev_loop *loop, const struct upgrade_sock *socks, size_t n, char *err,
                  size_t errlen)
{
    if (u->pid > 0 || u->done) {
        snprintf(err, errlen, "an upgrade is already under way (new process %d)", (int)u->pid);
        return GR_ERR_LIMIT;
    }
    if (self_argv == NULL) {
        snprintf(err, errlen, "the path of this binary is unknown");
        return GR_ERR_IO;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return GR_ERR_IO;
    }
    char ready_var[64];
    snprintf(ready_var, sizeof(ready_var), "%s=%d", UPGRADE_ENV_READY, p[1]);
    char *fds_var = fds_value(socks, n);
    char **env = fds_var != NULL ? child_env(fds_var, ready_var) : NULL;
    pid_t pid = env != NULL ? fork() : -1;
    if (pid == 0)
        exec_child(socks, n, p[1], env);
    int fork_err = errno;
    bool oom = env == NULL;
    free(env);
    free(fds_var);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        snprintf(err, errlen, "cannot start %s: %s", self_exe, oom ? "out of memory" : strerror(fork_err));
        return GR_ERR_IO;
    }
    u->loop = loop;
    u->pid = pid;
    u->ready_fd = p[0];
    u->done = false;
    ev_io_init(&u->ready, on_ready, p[0], EV_READ);
    ev_io_start(loop, &u->ready);
    ev_child_init(&u->child, on_child, pid, 0);
    ev_child_start(loop, &u->child);
    ev_timer_init(&u->timeout, on_timeout, UPGRADE_READY_TIMEOUT_S, 0.0);
    ev_timer_start(loop, &u->timeout);
    log_info("upgrade: started %s as process %d with %zu listening socket%s", self_exe, (int)pid, n, n == 1 ? "" : "s");
    return GR_OK;
}

void upgrade_stop(struct upgrade *u)
{
    if (u->loop == NULL)
        return;
    upgrade_end(u);
    ev_child_stop(u->loop, &u->child);
}
