/* Routing: virtual host precedence by :authority, then first matching route. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/router.h"

#include <string.h>

static const char *yaml =
    "listeners:\n"
    "  - name: l\n"
    "    address: 127.0.0.1:1\n"
    "    virtual_hosts:\n"
    "      - { name: any, domains: ['*'], routes: [{match: {prefix: /}, cluster: c}] }\n"
    "      - { name: exact, domains: [api.example.com], routes: [{match: {prefix: /}, cluster: c}] }\n"
    "      - { name: suffix, domains: ['*.example.com'], routes: [{match: {prefix: /}, cluster: c}] }\n"
    "      - { name: longer, domains: ['*.eu.example.com'], routes: [{match: {prefix: /}, cluster: c}] }\n"
    "      - { name: prefix, domains: ['api.*'], routes: [{match: {prefix: /}, cluster: c}] }\n"
    "  - name: m\n"
    "    address: 127.0.0.1:2\n"
    "    virtual_hosts:\n"
    "      - name: only\n"
    "        domains: [only.test]\n"
    "        routes:\n"
    "          - { match: { service: pkg.A, method: Get }, cluster: c }\n"
    "          - { match: { exact: /pkg.A/Put, headers: [{name: x-tenant, exact: blue}] }, cluster: c }\n"
    "          - { match: { service: pkg.A, headers: [{name: x-canary, present: true}] }, cluster: c }\n"
    "          - { match: { service: pkg.A, headers: [{name: x-old, present: false}] }, cluster: c }\n"
    "          - { match: { prefix: /pkg. }, cluster: c }\n"
    "clusters: [{name: c, endpoints: [{address: 127.0.0.1:3}]}]\n";

static struct gr_config *cfg;

static int setup(void **state)
{
    (void)state;
    char err[512];
    cfg = config_load_buffer("r.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    return cfg == NULL;
}

static int teardown(void **state)
{
    (void)state;
    config_free(cfg);
    return 0;
}

static const char *vhost(const char *authority)
{
    const struct gr_vhost_cfg *vh = router_find_vhost(&cfg->listeners[0], authority, strlen(authority));
    return vh ? vh->name : NULL;
}

static void domain_precedence(void **state)
{
    (void)state;
    assert_string_equal(vhost("api.example.com"), "exact");
    assert_string_equal(vhost("API.Example.COM:8443"), "exact");
    assert_string_equal(vhost("www.example.com"), "suffix");
    assert_string_equal(vhost("a.eu.example.com"), "longer");
    assert_string_equal(vhost("api.other.org"), "prefix");
    assert_string_equal(vhost("example.com"), "any"); /* "*.example.com" needs something before the dot */
    assert_string_equal(vhost("[::1]:8080"), "any");
    assert_string_equal(vhost(""), "any");
}

static void no_vhost_without_catch_all(void **state)
{
    (void)state;
    assert_null(router_find_vhost(&cfg->listeners[1], "other.test", 10));
    assert_null(router_match(&cfg->listeners[1], "other.test", 10, "/pkg.A/Get", 10, NULL));
}

static int route_index(const char *path, struct hdr_list *h)
{
    const struct gr_vhost_cfg *vh = &cfg->listeners[1].vhosts[0];
    const struct gr_route_cfg *r = router_find_route(vh, path, strlen(path), h);
    return r ? (int)(r - vh->routes) : -1;
}

static void routes_in_order(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct hdr_list none, blue, canary, old;
    headers_init(&none);
    headers_init(&blue);
    headers_init(&canary);
    headers_init(&old);
    assert_int_equal(headers_add(&blue, &a, (const uint8_t *)"x-tenant", 8, (const uint8_t *)"blue", 4), 0);
    assert_int_equal(headers_add(&canary, &a, (const uint8_t *)"x-canary", 8, (const uint8_t *)"", 0), 0);
    assert_int_equal(headers_add(&old, &a, (const uint8_t *)"x-old", 5, (const uint8_t *)"1", 1), 0);

    assert_int_equal(route_index("/pkg.A/Get", &none), 0);
    assert_int_equal(route_index("/pkg.A/Get?x=1", &none), 0); /* query ignored */
    assert_int_equal(route_index("/pkg.A/GetMore", &blue), 3); /* not Get; x-old absent */
    assert_int_equal(route_index("/pkg.A/Put", &blue), 1);
    assert_int_equal(route_index("/pkg.A/Put", &canary), 2);
    assert_int_equal(route_index("/pkg.A/Put", &none), 3); /* x-old absent */
    assert_int_equal(route_index("/pkg.A/Put", &old), 4);  /* x-old present: prefix route */
    assert_int_equal(route_index("/pkg.AB/Put", &old), 4); /* service match needs the slash */
    assert_int_equal(route_index("/other/Put", &none), -1);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(domain_precedence),
        cmocka_unit_test(no_vhost_without_catch_all),
        cmocka_unit_test(routes_in_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
