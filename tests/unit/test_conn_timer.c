/* The connection timer: several deadlines on one libev timer, re-armed only
 * when a deadline moves earlier. The pure part runs with explicit times;
 * one test runs a real loop (asserting order, never durations). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/conn_timer.h"

#include <string.h>

struct probe {
    struct conn_timer ct;
    int fired[8];      /* kinds in the order they fired */
    int n;             /* entries of fired */
    bool stop_on_fire; /* the handler stops the timer (as a close does) */
    int rearm_kind;    /* the handler sets this kind again, 10 s on (-1: none) */
};

static void on_expired(struct conn_timer *ct, enum conn_timer_kind kind)
{
    struct probe *p = container_of(ct, struct probe, ct);
    if (p->n < 8)
        p->fired[p->n++] = (int)kind;
    if (p->stop_on_fire)
        conn_timer_stop(ct);
    if (p->rearm_kind == (int)kind)
        conn_timer_set(ct, kind, 10.0);
}

static void setup_probe(struct probe *p, struct ev_loop *loop)
{
    memset(p, 0, sizeof(*p));
    p->rearm_kind = -1;
    conn_timer_init(&p->ct, loop, on_expired);
}

/* Only what is due fires, earliest first; the rest stays armed. */
static void fires_what_is_due_in_order(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe p;
    setup_probe(&p, loop);
    ev_tstamp now = ev_now(loop);
    conn_timer_set_at(&p.ct, CONN_TIMER_IDLE, now + 30);
    conn_timer_set_at(&p.ct, CONN_TIMER_WRITE, now + 5);
    conn_timer_set_at(&p.ct, CONN_TIMER_HEADER, now + 3);
    assert_true(conn_timer_next(&p.ct) == now + 3);
    conn_timer_fire(&p.ct, now + 6);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.fired[0], CONN_TIMER_HEADER);
    assert_int_equal(p.fired[1], CONN_TIMER_WRITE);
    assert_true(conn_timer_next(&p.ct) == now + 30);
    assert_true(p.ct.armed == now + 30);
    assert_true(ev_is_active(&p.ct.t));
    conn_timer_stop(&p.ct);
    assert_false(ev_is_active(&p.ct.t));
    assert_true(conn_timer_next(&p.ct) == 0);
    ev_loop_destroy(loop);
}

/* A deadline moved later does not touch libev; one moved earlier re-arms. */
static void later_is_free_earlier_rearms(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe p;
    setup_probe(&p, loop);
    ev_tstamp now = ev_now(loop);
    conn_timer_set_at(&p.ct, CONN_TIMER_IDLE, now + 10);
    assert_true(p.ct.armed == now + 10);
    conn_timer_set_at(&p.ct, CONN_TIMER_IDLE, now + 20); /* pushed back, as on every read */
    assert_true(p.ct.armed == now + 10);                 /* still armed for the old time */
    conn_timer_set_at(&p.ct, CONN_TIMER_KEEPALIVE, now + 2);
    assert_true(p.ct.armed == now + 2); /* earlier: re-armed */
    /* The early expiry at now + 10 finds nothing due and re-arms for now + 20. */
    conn_timer_clear(&p.ct, CONN_TIMER_KEEPALIVE);
    conn_timer_fire(&p.ct, now + 10);
    assert_int_equal(p.n, 0);
    assert_true(p.ct.armed == now + 20);
    conn_timer_stop(&p.ct);
    ev_loop_destroy(loop);
}

/* A handler that stops the timer (a connection closing) leaves it stopped;
 * one that sets its deadline again gets it re-armed. */
static void handler_may_stop_or_rearm(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe p;
    setup_probe(&p, loop);
    ev_tstamp now = ev_now(loop);
    p.stop_on_fire = true;
    conn_timer_set_at(&p.ct, CONN_TIMER_HEADER, now + 1);
    conn_timer_set_at(&p.ct, CONN_TIMER_IDLE, now + 1.5);
    conn_timer_fire(&p.ct, now + 2);
    assert_int_equal(p.n, 1); /* the stop cleared IDLE too */
    assert_false(ev_is_active(&p.ct.t));
    setup_probe(&p, loop);
    p.rearm_kind = CONN_TIMER_KEEPALIVE;
    conn_timer_set_at(&p.ct, CONN_TIMER_KEEPALIVE, now + 1);
    conn_timer_fire(&p.ct, now + 1);
    assert_int_equal(p.n, 1);
    assert_true(conn_timer_next(&p.ct) > now + 5);
    assert_true(ev_is_active(&p.ct.t));
    conn_timer_stop(&p.ct);
    ev_loop_destroy(loop);
}

/* Through a real loop: two short deadlines fire, in order, and the timer
 * stops once nothing is left. Bounded in loop turns, no timing asserted. */
static void real_loop_fires_both(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct probe p;
    setup_probe(&p, loop);
    conn_timer_set(&p.ct, CONN_TIMER_WRITE, 0.002);
    conn_timer_set(&p.ct, CONN_TIMER_IDLE, 0.001);
    for (int i = 0; i < 10000 && p.n < 2; i++)
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.fired[0], CONN_TIMER_IDLE);
    assert_int_equal(p.fired[1], CONN_TIMER_WRITE);
    assert_false(ev_is_active(&p.ct.t));
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fires_what_is_due_in_order),
        cmocka_unit_test(later_is_free_earlier_rearms),
        cmocka_unit_test(handler_may_stop_or_rearm),
        cmocka_unit_test(real_loop_fires_both),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
