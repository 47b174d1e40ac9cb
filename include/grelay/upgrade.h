/* Binary upgrade (SIGUSR2), both halves.
 *
 * The running process starts its own binary again (the path it was started
 * from, so a binary replaced on disk is the one that runs) with every
 * listening socket inherited, and waits until the new process says it is
 * ready; then it drains as on SIGTERM. The sockets are the same kernel
 * sockets in both processes (not new ones bound beside them), so their
 * accept queues are never dropped and no connection attempt is refused
 * during the switch: until the old process closes its copies, both accept.
 *
 * Hand-over, in the environment of the new process:
 *   GRELAY_LISTEN_FDS=name=fd,fd;name=fd   listener name, then its sockets
 *   GRELAY_UPGRADE_READY_FD=fd             write one byte here once serving
 *
 * Owned by main (the old half runs on the main loop); proxy.c takes the
 * inherited sockets while it builds the listeners. */
#ifndef GRELAY_UPGRADE_H
#define GRELAY_UPGRADE_H

#include "grelay/config.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define UPGRADE_ENV_FDS "GRELAY_LISTEN_FDS"
#define UPGRADE_ENV_READY "GRELAY_UPGRADE_READY_FD"
/* How long the old process waits for the new one to be ready before it
 * gives up, stops it and goes on serving. */
#define UPGRADE_READY_TIMEOUT_S 30.0

/* ---- the new process ---- */

/* Takes the sockets handed over in the environment (and removes both
 * variables from it, so a later upgrade of this process starts clean).
 * Every fd is checked to be a listening socket; bad entries are logged and
 * skipped. Returns how many sockets were taken. Call once, before the
 * listeners are built. */
size_t upgrade_inherit(void);
/* An inherited socket of listener `name`, bound to `addr` (same family,
 * address and port), which the caller then owns; -1 if none is left. */
int upgrade_take(const char *name, const struct gr_addr *addr);
/* How many inherited sockets upgrade_take would give for name and addr.
 * Every one must get a worker that accepts on it: a socket closed with
 * connections in its queue resets them. */
size_t upgrade_count(const char *name, const struct gr_addr *addr);
/* Inherited sockets not taken yet (listeners the new config no longer
 * has, or changed). */
size_t upgrade_left(void);
/* The new process serves: closes the sockets nobody took, and tells the
 * old process (one byte on the ready fd) so that it starts draining.
 * Returns whether this process was started by an upgrade. */
bool upgrade_ready(void);

/* ---- the old process ---- */

/* One listening socket to hand over. */
struct upgrade_sock {
    const char *listener; /* its listener's name */
    int fd;               /* the socket (stays open here too) */
};

/* Remembers how this process was started: the binary's path (read from
 * /proc/self/exe now, before anyone can replace the file) and argv, which
 * must live as long as the process. Returns GR_OK or GR_ERR_IO. */
int upgrade_init(char **argv);

/* One upgrade in progress, watched on the main loop. */
struct upgrade {
    struct ev_loop *loop;                /* the main loop */
    pid_t pid;                           /* the new process; 0 when none runs */
    int ready_fd;                        /* read end of the ready pipe; -1 once closed */
    ev_io ready;                         /* the byte (or EOF) from the new process */
    ev_child child;                      /* the new process exits */
    ev_timer timeout;                    /* it is not ready within UPGRADE_READY_TIMEOUT_S */
    bool done;                           /* the new process said it is ready */
    void (*on_ready)(struct upgrade *u); /* it is: the owner drains this process */
};

/* Starts the new process with socks inherited and watches it. Returns
 * GR_OK, GR_ERR_LIMIT (an upgrade already runs) or GR_ERR_IO with a
 * message in err. */
int upgrade_start(struct upgrade *u, struct ev_loop *loop, const struct upgrade_sock *socks, size_t n, char *err,
                  size_t errlen);
/* Stops watching (the new process, if any, keeps running). */
void upgrade_stop(struct upgrade *u);

#endif
