/* The live view's page: the binary carries src/admin_page.html byte for
 * byte, and the page asks for nothing outside its own origin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/admin_page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_source(size_t *len)
{
    FILE *f = fopen(GRELAY_SOURCE_DIR "/src/admin_page.html", "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void the_binary_serves_the_source_file(void **state)
{
    (void)state;
    size_t want_len, len;
    char *want = read_source(&want_len);
    const char *page = admin_page_html(&len);
    assert_int_equal(len, want_len);
    assert_memory_equal(page, want, len);
    assert_int_equal(page[len], '\0'); /* a NUL after the bytes, not counted */
    free(want);
}

/* Self-contained: no script, style sheet, font or image is fetched, so the
 * page works offline and with no third party in the loop. */
static void the_page_loads_nothing_from_elsewhere(void **state)
{
    (void)state;
    size_t len;
    const char *page = admin_page_html(&len);
    static const char *const banned[] = {
        "<script src", "stylesheet",         "@import",       "url(", "http://", "https://", "innerHTML",
        "outerHTML",   "insertAdjacentHTML", "document.write"};
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++) {
        if (strstr(page, banned[i]) != NULL)
            fail_msg("the page contains '%s'", banned[i]);
    }
    assert_non_null(strstr(page, "fetch('stats.json'"));
    /* its one link: an empty icon, so the browser asks for no favicon */
    static const char icon[] = "<link rel=\"icon\" href=\"data:,\">";
    const char *link = strstr(page, "<link");
    assert_non_null(link);
    assert_memory_equal(link, icon, sizeof(icon) - 1);
    assert_null(strstr(link + 1, "<link"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_binary_serves_the_source_file),
        cmocka_unit_test(the_page_loads_nothing_from_elsewhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
