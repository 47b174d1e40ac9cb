/* A worker's config snapshots (worker.h, struct worker_snap): each worker
 * counts its own users of each snapshot, maps an old snapshot's listeners
 * to the current one's by slot, and gives its reference back once the last
 * user of a snapshot that is no longer current is gone (at the end of the
 * loop iteration). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/config.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct gr_config *load(const char *listeners)
{
    char yaml[1024], err[512];
    snprintf(yaml, sizeof(yaml),
             "workers: 1\nlisteners:\n%sclusters: [{name: c, endpoints: [{address: 127.0.0.1:1}]}]\n", listeners);
    struct gr_config *cfg = config_load_buffer("s.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    return cfg;
}

#define LISTENER(name, port)                                                                                           \
    "  - name: " name "\n    address: 127.0.0.1:" port "\n"                                                            \
    "    virtual_hosts: [{name: d, domains: ['*'], routes: [{match: {prefix: /}, cluster: c}]}]\n"

static uint32_t refs(struct gr_config *cfg) { return atomic_load(&cfg->refs); }

static void an_old_snapshot_lives_while_used_and_maps_to_the_new(void **state)
{
    (void)state;
    struct gr_config *one = load(LISTENER("a", "7001") LISTENER("b", "7002"));
    struct gr_config *two = load(LISTENER("c", "7003") LISTENER("a", "7001"));
    assert_non_null(one);
    assert_non_null(two);
    two->listeners[0].slot = 2; /* what proxy_reload does: c is new, a keeps its slot */
    two->listeners[1].slot = 0;
    struct worker *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    assert_int_equal(worker_init(w, 0, one), GR_OK);
    struct worker_snap *s1 = worker_snap_adopt(w, config_ref(one));
    assert_non_null(s1);
    assert_ptr_equal(worker_snap_of(w, &one->listeners[1]), s1);
    assert_ptr_equal(s1->now[1], &one->listeners[1]);

    /* A connection on a, accepted under one. */
    assert_true(worker_conn_take(w, &one->listeners[0]));
    assert_int_equal(s1->users, 1);
    struct worker_snap *s2 = worker_snap_adopt(w, config_ref(two));
    assert_non_null(s2);
    assert_ptr_equal(w->snap, s2);
    assert_ptr_equal(w->cfg, two);
    assert_ptr_equal(s1->now[0], &two->listeners[1]); /* a is kept: new calls take two's routes */
    assert_null(s1->now[1]);                          /* b was removed: its connections keep one's */
    worker_run_deferred(w);
    assert_ptr_equal(worker_snap_of(w, &one->listeners[0]), s1); /* still used */
    assert_int_equal(refs(one), 2);

    /* A call on that connection holds the current snapshot, then ends. */
    worker_snap_hold(s2);
    worker_snap_drop(w, s2);
    assert_int_equal(s2->users, 0);
    worker_run_deferred(w);
    assert_ptr_equal(w->snap, s2); /* the current one stays, unused or not */

    worker_conn_release(w, &one->listeners[0]);                  /* the connection is destroyed */
    assert_ptr_equal(worker_snap_of(w, &one->listeners[0]), s1); /* freed at the end of the iteration */
    worker_run_deferred(w);
    assert_null(worker_snap_of(w, &one->listeners[0]));
    assert_int_equal(refs(one), 1);
    assert_int_equal(refs(two), 2);
    worker_destroy(w);
    free(w);
    assert_int_equal(refs(two), 1);
    config_unref(one);
    config_unref(two);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_old_snapshot_lives_while_used_and_maps_to_the_new),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
