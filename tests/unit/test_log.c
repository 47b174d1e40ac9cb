/* Error names and log levels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/common.h"
#include "grelay/log.h"

#include <string.h>

static void every_error_has_its_own_name(void **state)
{
    (void)state;
    static const struct {
        int err;
        const char *name;
    } names[] = {
        {GR_OK, "success"},
        {GR_ERR_NOMEM, "out of memory"},
        {GR_ERR_IO, "system call failed"},
        {GR_ERR_PROTO, "protocol error"},
        {GR_ERR_CONFIG, "invalid configuration"},
        {GR_ERR_LIMIT, "limit reached"},
        {GR_ERR_CLOSED, "peer closed"},
        {GR_ERR_AGAIN, "not yet"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_string_equal(log_strerror(names[i].err), names[i].name);
    /* The codes run from 0 down without a gap: each has a name of its own. */
    for (int e = GR_OK; e >= GR_ERR_AGAIN; e--) {
        assert_string_not_equal(log_strerror(e), "unknown error");
        for (int f = GR_OK; f > e; f--)
            assert_string_not_equal(log_strerror(e), log_strerror(f));
    }
    assert_string_equal(log_strerror(GR_ERR_AGAIN - 1), "unknown error");
    assert_string_equal(log_strerror(1), "unknown error");
    assert_string_equal(log_strerror(-1000), "unknown error");
}

static void log_levels_parse_in_any_case(void **state)
{
    (void)state;
    enum log_level l = LOG_ERROR;
    assert_int_equal(log_level_parse("debug", &l), GR_OK);
    assert_int_equal(l, LOG_DEBUG);
    assert_int_equal(log_level_parse("WARN", &l), GR_OK);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("Info", &l), GR_OK);
    assert_int_equal(l, LOG_INFO);
    assert_int_equal(log_level_parse("error", &l), GR_OK);
    assert_int_equal(l, LOG_ERROR);
    assert_int_equal(log_level_parse("loud", &l), GR_ERR_CONFIG);
    assert_int_equal(log_level_parse("", &l), GR_ERR_CONFIG);
    assert_int_equal(l, LOG_ERROR); /* untouched on failure */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_error_has_its_own_name),
        cmocka_unit_test(log_levels_parse_in_any_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
