/* The pool with its real upstream connection (to a loopback socket that
 * never answers, so the connection stays in its handshake) and calls that
 * are only up_slots: a long line served without recursion (review F12),
 * a retired pool that refuses its line and is freed only at the end of the
 * loop iteration (review F5), and calls that wait longer than
 * max_pending_time refused by the one timer of the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/config.h"
#include "grelay/h2_client.h"
#include "grelay/pool.h"
#include "grelay/worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Longer than any stack would hold if serving the line recursed. */
#define LINE 50000
/* The fixture's max_pending_time, ms. */
#define PENDING_MS 100

static struct {
    int granted;   /* slots handed over */
    int refused;   /* slots refused */
    char why[128]; /* the last refusal's reason */
} seen;

/* A call that fails right after it got its slot (as one whose request
 * cannot be sent): it lets go of the slot inside the grant, which asks the
 * pool to serve its line again while it is serving it. */
static void on_granted(struct up_slot *sl)
{
    seen.granted++;
    sl->ops->detach(sl, false);
    pool_release(sl);
}

static void on_refused(struct up_slot *sl, const char *why)
{
    (void)sl;
    seen.refused++;
    snprintf(seen.why, sizeof(seen.why), "%s", why);
}

static const struct upstream_events events = {.granted = on_granted, .refused = on_refused};

struct fixture {
    int listen_fd; /* the backend that never answers */
    struct gr_config *cfg;
    struct worker w;
    struct balancer lb;
    struct endpoint_set *set;
    struct pool *p;
    struct up_slot *slots; /* LINE + 1 calls */
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    memset(&seen, 0, sizeof(seen));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    f.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (f.listen_fd < 0 || bind(f.listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(f.listen_fd, 16) != 0 ||
        getsockname(f.listen_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    char yaml[1024], err[512];
    snprintf(yaml, sizeof(yaml),
             "listeners: [{name: l, address: 127.0.0.1:1, virtual_hosts: [{name: v, domains: ['*'],"
             " routes: [{match: {prefix: /}, cluster: c}]}]}]\n"
             "clusters: [{name: c, max_connections: 1, max_streams_per_connection: 1, max_pending: %d,"
             " max_pending_time: %dms, connect_timeout: 60s, endpoints: [{address: 127.0.0.1:%u}]}]\n",
             LINE, PENDING_MS, (unsigned)ntohs(a.sin_port));
    f.cfg = config_load_buffer("p.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (f.cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (worker_init(&f.w, 0, f.cfg) != GR_OK || h2_client_worker_init(&f.w) != GR_OK)
        return -1;
    const struct gr_cluster_cfg *cl = &f.cfg->clusters[0];
    uint32_t weight = 1;
    f.set = cluster_static_set(cl);
    if (f.set == NULL || balancer_init(&f.lb, cl->lb_policy, &weight, 1, 1) != GR_OK)
        return -1;
    f.p = pool_new(&f.w, cl, &f.lb, 0, &f.set->eps[0]);
    f.slots = calloc(LINE + 1, sizeof(*f.slots));
    if (f.p == NULL || f.slots == NULL)
        return -1;
    for (size_t i = 0; i <= LINE; i++) {
        f.slots[i].ev = &events;
        gr_list_init(&f.slots[i].link);
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->p != NULL) {
        pool_shutdown(f->p);
        worker_run_deferred(&f->w);
        pool_free(f->p);
    }
    worker_run_deferred(&f->w);
    free(f->slots);
    balancer_destroy(&f->lb);
    cluster_set_unref(f->set);
    h2_client_worker_destroy(&f->w);
    worker_destroy(&f->w);
    config_free(f->cfg);
    close(f->listen_fd);
    return 0;
}

/* One call holds the connection's only slot, LINE wait; when it lets go,
 * the whole line is served, each call failing inside its grant. */
static void long_line_is_served_without_recursion(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i <= LINE; i++)
        assert_int_equal(pool_acquire(f->p, &f->slots[i]), GR_OK);
    assert_non_null(f->slots[0].conn); /* attached to the connecting connection */
    assert_int_equal(f->p->n_conns, 1);
    assert_int_equal(f->p->n_waiting, LINE);
    assert_int_equal(f->lb.active[0], LINE + 1);
    assert_int_equal(pool_acquire(f->p, &(struct up_slot){.ev = &events}), GR_ERR_LIMIT);
    f->slots[0].ops->detach(&f->slots[0], false);
    pool_release(&f->slots[0]);
    assert_int_equal(seen.granted, LINE);
    assert_int_equal(f->p->n_waiting, 0);
    assert_int_equal(f->lb.active[0], 0); /* every call counted finished once */
    assert_int_equal(seen.refused, 0);
}

/* The endpoint leaves the set: the line is refused with the reason, the
 * call in flight keeps its connection, and the pool outlives the close of
 * its last connection until the loop iteration ends. */
static void retired_pool_refuses_and_is_freed_later(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(pool_acquire(f->p, &f->slots[i]), GR_OK);
    pool_retire(f->p);
    assert_int_equal(seen.refused, 3);
    assert_non_null(strstr(seen.why, "left the cluster"));
    for (size_t i = 1; i < 4; i++)
        assert_null(f->slots[i].pool);
    assert_non_null(f->slots[0].conn);
    struct pool *p = f->p;
    f->p = NULL; /* it frees itself now */
    f->slots[0].ops->detach(&f->slots[0], false);
    pool_release(&f->slots[0]);
    pool_shutdown(p);        /* closes the last connection: the free is deferred */
    assert_true(p->retired); /* still readable (ASan would say otherwise) */
    assert_int_equal(p->n_conns, 0);
    worker_run_deferred(&f->w); /* frees it */
}

/* Runs the worker's loop until `refused` calls were refused (bounded). */
static void run_until_refused(struct fixture *f, int refused)
{
    for (int i = 0; i < 200 && seen.refused < refused; i++)
        ev_run(f->w.loop, EVRUN_ONCE);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The whole line, queued at once, is refused by one expiry of the line's
 * timer (no timer per call, no recursion), with the reason, while the call
 * holding the slot keeps it. */
static void a_long_line_expires_at_once(void **state)
{
    struct fixture *f = *state;
    double t0 = mono_s();
    ev_now_update(f->w.loop); /* the line's clock starts after t0 */
    for (size_t i = 0; i <= LINE; i++)
        assert_int_equal(pool_acquire(f->p, &f->slots[i]), GR_OK);
    assert_int_equal(f->p->n_waiting, LINE);
    run_until_refused(f, LINE);
    assert_int_equal(seen.refused, LINE);
    assert_true(mono_s() - t0 >= PENDING_MS / 1e3 * 0.9); /* not before max_pending_time */
    assert_non_null(strstr(seen.why, "no stream slot within max_pending_time (100ms)"));
    assert_int_equal(f->p->n_waiting, 0);
    assert_int_equal(f->lb.active[0], 1); /* the call on the connection */
    assert_non_null(f->slots[0].conn);
    f->slots[0].ops->detach(&f->slots[0], false);
    pool_release(&f->slots[0]);
    assert_int_equal(seen.granted, 0);
}

/* Each call waits max_pending_time from when it joined the line: the
 * oldest goes first, a younger one later, and one that left the line early
 * is not refused. */
static void each_call_waits_its_own_time(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(pool_acquire(f->p, &f->slots[i]), GR_OK); /* 0 attached, 1 and 2 in line */
    usleep(60 * 1000);
    ev_now_update(f->w.loop);
    assert_int_equal(pool_acquire(f->p, &f->slots[3]), GR_OK);
    pool_release(&f->slots[1]); /* leaves the line (its client went away) */
    run_until_refused(f, 1);
    assert_int_equal(seen.refused, 1);
    assert_null(f->slots[2].pool);   /* refused */
    assert_true(f->slots[3].queued); /* younger: still waiting */
    run_until_refused(f, 2);
    assert_int_equal(seen.refused, 2);
    assert_null(f->slots[3].pool);
    assert_int_equal(f->p->n_waiting, 0);
    f->slots[0].ops->detach(&f->slots[0], false);
    pool_release(&f->slots[0]);
    assert_int_equal(f->lb.active[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(long_line_is_served_without_recursion, setup, teardown),
        cmocka_unit_test_setup_teardown(retired_pool_refuses_and_is_freed_later, setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_line_expires_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(each_call_waits_its_own_time, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
