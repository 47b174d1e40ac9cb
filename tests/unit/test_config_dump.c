/* GET /config_dump's JSON (config_dump.c): the YAML tree mirrored, plain
 * scalars that read as numbers or booleans kept so, secrets masked, and
 * bounded against trees that aliases blow up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/config.h"
#include "grelay/config_dump.h"

#include <stdio.h>
#include <string.h>

/* The dump of yaml (parsed here with libyaml), in arena. */
static const char *dump(struct arena *arena, const char *yaml)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    assert_true(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
    assert_true(yaml_parser_load(&parser, &doc));
    const char *out = config_dump_json(&doc, yaml_document_get_root_node(&doc), arena);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    assert_non_null(out);
    return out;
}

static void scalars_keep_their_kind(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 4096);
    assert_string_equal(dump(&a, "n: 12\nf: -1.5e3\nq: \"12\"\nb: true\nB: 'false'\nz: ~\ne:\nhex: 0x1F\n"
                                 "lead: 012\ns: 5s\nl: [1, two, \"3\"]\nm: {k: v}\nesc: \"a\\\"b\\\\c\\n\"\n"),
                        "{\"n\":12,\"f\":-1.5e3,\"q\":\"12\",\"b\":true,\"B\":\"false\",\"z\":null,\"e\":null,"
                        "\"hex\":\"0x1F\",\"lead\":\"012\",\"s\":\"5s\",\"l\":[1,\"two\",\"3\"],\"m\":{\"k\":\"v\"},"
                        "\"esc\":\"a\\\"b\\\\c\\n\"}");
    arena_free(&a);
}

static void secrets_are_masked(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 4096);
    const char *out =
        dump(&a, "tls:\n  cert_chain: /etc/grelay/tls.crt\n  private_key: /etc/grelay/tls.key\n"
                 "password: hunter2\nsecret: {nested: s3cr3t}\ntoken: [t0k3n]\n"
                 "inline: |\n  -----BEGIN EC PRIVATE KEY-----\n  MHcCAQEEIB\n  -----END EC PRIVATE KEY-----\n"
                 "other: \"an RSA PRIVATE KEY here\"\nlist: [\"-----BEGIN CERTIFICATE-----\"]\n");
    assert_string_equal(out, "{\"tls\":{\"cert_chain\":\"/etc/grelay/tls.crt\",\"private_key\":\"[redacted]\"},"
                             "\"password\":\"[redacted]\",\"secret\":\"[redacted]\",\"token\":\"[redacted]\","
                             "\"inline\":\"[redacted]\",\"other\":\"[redacted]\",\"list\":[\"[redacted]\"]}");
    assert_null(strstr(out, "hunter2"));
    assert_null(strstr(out, "s3cr3t"));
    assert_null(strstr(out, "t0k3n"));
    assert_null(strstr(out, "MHcCAQEEIB"));
    assert_null(strstr(out, "tls.key"));
    arena_free(&a);
}

/* n nested empty lists: "[[...]]". */
static void nested(char *buf, int n)
{
    memset(buf, '[', (size_t)n);
    memset(buf + n, ']', (size_t)n);
    buf[2 * n] = '\0';
}

static void bounded_in_depth_and_size(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 4096);
    /* The root is at depth 0: CONFIG_DUMP_MAX_DEPTH + 1 nested lists are shown, one more is not. */
    char deep[512];
    nested(deep, CONFIG_DUMP_MAX_DEPTH + 1);
    const char *out = dump(&a, deep);
    assert_string_equal(out, deep);
    nested(deep, CONFIG_DUMP_MAX_DEPTH + 2);
    out = dump(&a, deep);
    assert_string_equal(out, "{\"error\":\"the config is too large or too deeply nested to dump\"}");
    /* Ten levels of ten aliases each: 10^10 scalars if expanded. */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                       "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    out = dump(&a, bomb);
    assert_string_equal(out, "{\"error\":\"the config is too large or too deeply nested to dump\"}");
    arena_free(&a);
}

static void a_loaded_snapshot_has_its_dump(void **state)
{
    (void)state;
    const char *yaml = "workers: 2\n"
                       "admin: { address: 127.0.0.1:9901, allow_mutations: false }\n"
                       "listeners:\n"
                       "  - name: ingress\n"
                       "    address: 127.0.0.1:8080\n"
                       "    virtual_hosts:\n"
                       "      - name: default\n"
                       "        domains: [\"*\"]\n"
                       "        routes:\n"
                       "          - match: { prefix: \"/\" }\n"
                       "            cluster: backend\n"
                       "clusters:\n"
                       "  - name: backend\n"
                       "    endpoints: [{ address: 127.0.0.1:50051, weight: 3 }]\n";
    char err[512];
    struct gr_config *cfg = config_load_buffer("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL)
        print_error("%s\n", err);
    assert_non_null(cfg);
    assert_string_equal(cfg->dump_json,
                        "{\"workers\":2,\"admin\":{\"address\":\"127.0.0.1:9901\",\"allow_mutations\":false},"
                        "\"listeners\":[{\"name\":\"ingress\",\"address\":\"127.0.0.1:8080\",\"virtual_hosts\":[{"
                        "\"name\":\"default\",\"domains\":[\"*\"],\"routes\":[{\"match\":{\"prefix\":\"/\"},"
                        "\"cluster\":\"backend\"}]}]}],\"clusters\":[{\"name\":\"backend\",\"endpoints\":[{"
                        "\"address\":\"127.0.0.1:50051\",\"weight\":3}]}]}");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scalars_keep_their_kind),
        cmocka_unit_test(secrets_are_masked),
        cmocka_unit_test(bounded_in_depth_and_size),
        cmocka_unit_test(a_loaded_snapshot_has_its_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
