/* The new half of a binary upgrade: taking the listening sockets handed
 * over in the environment, by listener name and bound address, and telling
 * the old process it is ready. Real sockets and a real pipe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/upgrade.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A socket on 127.0.0.1, any port, listening or only bound; its address in a. */
static int loopback_socket(bool listen_too, struct gr_addr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    if (listen_too)
        assert_int_equal(listen(fd, 8), 0);
    memset(a, 0, sizeof(*a));
    a->len = sizeof(a->ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a->ss, &a->len), 0);
    a->text = "127.0.0.1:?";
    return fd;
}

static bool is_open(int fd) { return fcntl(fd, F_GETFD) >= 0 || errno != EBADF; }

static void takes_by_name_and_address_then_closes_the_rest(void **state)
{
    (void)state;
    struct gr_addr a1, a2, a3;
    int l1 = loopback_socket(true, &a1), l2 = loopback_socket(true, &a2), bound = loopback_socket(false, &a3);
    int p[2];
    assert_int_equal(pipe(p), 0);
    char fds[160], ready[32];
    /* 9999 is not open and `bound` does not listen: both are skipped. */
    snprintf(fds, sizeof(fds), "edge=%d,9999;web=%d,%d;=5;junk", l1, l2, bound);
    snprintf(ready, sizeof(ready), "%d", p[1]);
    setenv(UPGRADE_ENV_FDS, fds, 1);
    setenv(UPGRADE_ENV_READY, ready, 1);

    assert_int_equal(upgrade_inherit(), 2);
    assert_null(getenv(UPGRADE_ENV_FDS));
    assert_null(getenv(UPGRADE_ENV_READY));
    assert_true(fcntl(l1, F_GETFD) & FD_CLOEXEC); /* not handed on to whatever we start */

    assert_int_equal(upgrade_take("edge", &a2), -1); /* the name matches, the address does not */
    assert_int_equal(upgrade_take("web", &a1), -1);  /* and the other way round */
    assert_int_equal(upgrade_take("edge", &a1), l1);
    assert_int_equal(upgrade_take("edge", &a1), -1); /* taken once */
    assert_int_equal(upgrade_left(), 1);

    assert_true(upgrade_ready());
    assert_false(is_open(l2)); /* nobody took it: closed */
    assert_true(is_open(l1));
    assert_true(is_open(bound));
    char b = 0;
    assert_int_equal(read(p[0], &b, 1), 1);
    assert_int_equal(b, 'R');
    assert_int_equal(read(p[0], &b, 1), 0); /* and the write end is closed */
    assert_false(upgrade_ready());          /* once */
    close(l1);
    close(bound);
    close(p[0]);
}

static void without_an_upgrade_nothing_is_inherited(void **state)
{
    (void)state;
    unsetenv(UPGRADE_ENV_FDS);
    unsetenv(UPGRADE_ENV_READY);
    struct gr_addr a;
    int l = loopback_socket(true, &a);
    assert_int_equal(upgrade_inherit(), 0);
    assert_int_equal(upgrade_take("edge", &a), -1);
    assert_false(upgrade_ready());
    assert_true(is_open(l));
    close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(takes_by_name_and_address_then_closes_the_rest),
        cmocka_unit_test(without_an_upgrade_nothing_is_inherited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
