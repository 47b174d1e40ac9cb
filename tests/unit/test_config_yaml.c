/* The YAML walker on its own: each typed setter, the schema rules (unknown,
 * duplicate and required keys, checks, positions) and a setter of the
 * caller's own, with a small schema that knows nothing of config.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grelay/config_yaml.h"

#include <stdio.h>
#include <string.h>

struct item {
    const char *id;
    uint32_t n;
    struct gr_pos pos;
};

struct top {
    const char *name;
    uint32_t count;
    uint32_t bytes;
    uint64_t wait_ms;
    bool on;
    int color;
    const char **tags;
    size_t n_tags;
    struct item *items;
    size_t n_items;
    struct item one;
    int doubled;
    struct gr_pos name_pos;
    uint32_t seen;
};

/* A setter of the caller's own: an integer, stored doubled. */
static int set_doubled(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    uint64_t u;
    const char *s = config_yaml_scalar(v);
    if (!config_yaml_parse_u64(s, strlen(s), &u) || u > 1000)
        return config_yaml_fail_node(c, v, "'%s' wants 0..1000", f->key);
    *(int *)((char *)obj + f->off) = (int)u * 2;
    return GR_OK;
}

static void item_init(void *obj) { ((struct item *)obj)->n = 7; }

static const struct config_field item_fields[] = {
    {.key = "id", .set = config_yaml_set_str, .off = offsetof(struct item, id), .flags = FL_REQUIRED},
    {.key = "n", .set = config_yaml_set_u32, .off = offsetof(struct item, n), .min = 1, .max = 9},
    {0},
};
static const struct config_schema item_schema = {"item",      sizeof(struct item), offsetof(struct item, pos),
                                                 item_fields, item_init,           NULL};

static const char *const colors[] = {"red", "green", NULL};

static int check_top(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node)
{
    struct top *t = obj;
    t->seen = seen;
    if (t->on && t->count == 0)
        return config_yaml_fail_node(c, node, "on needs count");
    return GR_OK;
}

static const struct config_field top_fields[] = {
    {.key = "name",
     .set = config_yaml_set_str,
     .off = offsetof(struct top, name),
     .flags = FL_LOWER,
     .pos_off = offsetof(struct top, name_pos)},
    {.key = "count", .set = config_yaml_set_u32, .off = offsetof(struct top, count), .min = 0, .max = 100},
    {.key = "bytes", .set = config_yaml_set_size, .off = offsetof(struct top, bytes), .min = 0, .max = 1u << 30},
    {.key = "wait", .set = config_yaml_set_duration, .off = offsetof(struct top, wait_ms), .min = 0, .max = 3600000},
    {.key = "on", .set = config_yaml_set_bool, .off = offsetof(struct top, on)},
    {.key = "color", .set = config_yaml_set_enum, .off = offsetof(struct top, color), .names = colors},
    {.key = "tags",
     .set = config_yaml_set_strlist,
     .off = offsetof(struct top, tags),
     .count_off = offsetof(struct top, n_tags),
     .flags = FL_LOWER | FL_NONEMPTY},
    {.key = "items",
     .set = config_yaml_set_list,
     .off = offsetof(struct top, items),
     .count_off = offsetof(struct top, n_items),
     .sub = &item_schema},
    {.key = "one", .set = config_yaml_set_obj, .off = offsetof(struct top, one), .sub = &item_schema},
    {.key = "doubled", .set = set_doubled, .off = offsetof(struct top, doubled)},
    {0},
};
static const struct config_schema top_schema = {"the file", sizeof(struct top), NO_POS, top_fields, NULL, check_top};

/* Loads yaml into *t; returns the error text, or "" on success. */
static const char *load(const char *yaml, struct top *t, struct arena *a)
{
    static char err[256];
    err[0] = '\0';
    memset(t, 0, sizeof(*t));
    struct config_yaml c = {.arena = a, .name = "y.yaml", .err = err, .errlen = sizeof(err)};
    int rc = config_yaml_load(&c, yaml, strlen(yaml), &top_schema, t);
    assert_int_equal(rc == GR_OK, err[0] == '\0');
    assert_null(c.doc);
    return err;
}

static void every_setter_stores_its_kind(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct top t;
    const char *yaml = "name: MiXed\n"
                       "count: 42\n"
                       "bytes: 64KiB\n"
                       "wait: 1.5s\n"
                       "on: true\n"
                       "color: green\n"
                       "tags: [A, b]\n"
                       "items:\n"
                       "  - id: x\n"
                       "  - {id: y, n: 3}\n"
                       "one: {id: z}\n"
                       "doubled: 21\n";
    assert_string_equal(load(yaml, &t, &a), "");
    assert_string_equal(t.name, "mixed");
    assert_int_equal(t.name_pos.line, 1);
    assert_int_equal(t.name_pos.col, 7);
    assert_int_equal(t.count, 42);
    assert_int_equal(t.bytes, 65536);
    assert_int_equal(t.wait_ms, 1500);
    assert_true(t.on);
    assert_int_equal(t.color, 1);
    assert_int_equal(t.n_tags, 2);
    assert_string_equal(t.tags[0], "a");
    assert_string_equal(t.tags[1], "b");
    assert_int_equal(t.n_items, 2);
    assert_string_equal(t.items[0].id, "x");
    assert_int_equal(t.items[0].n, 7); /* init's default */
    assert_int_equal(t.items[0].pos.line, 9);
    assert_int_equal(t.items[1].n, 3);
    assert_string_equal(t.one.id, "z");
    assert_int_equal(t.doubled, 42);
    assert_int_equal(t.seen, (1u << 10) - 1); /* every key present */
    arena_free(&a);
}

static void sizes_and_durations(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        uint64_t bytes, wait_ms;
    } good[] = {
        {"bytes: 3B\nwait: 0\n", 3, 0},
        {"bytes: 64K\nwait: 250ms\n", 65536, 250},
        {"bytes: 2Mi\nwait: 100us\n", 2u << 20, 1}, /* sub-millisecond rounds up */
        {"bytes: 1MiB\nwait: 2m\n", 1u << 20, 120000},
        {"bytes: 7\nwait: 1h\n", 7, 3600000},
        {"bytes: 0Ki\nwait: 0.000001s\n", 0, 1},
        {"bytes: 1G\nwait: 1s\n", 1u << 30, 1000},
    };
    struct arena a;
    arena_init(&a, 1024);
    struct top t;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_string_equal(load(good[i].yaml, &t, &a), "");
        assert_int_equal(t.bytes, good[i].bytes);
        assert_int_equal(t.wait_ms, good[i].wait_ms);
    }
    static const char *const bad_sizes[] = {"1T", "1 KiB", "-1", "0x10", "K", "18446744073709551615K"};
    for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        char yaml[64], want[160];
        snprintf(yaml, sizeof(yaml), "bytes: %s\n", bad_sizes[i]);
        snprintf(want, sizeof(want), "y.yaml:1:8: 'bytes' must be a size such as 65536, 64KiB or 1MiB, got '%s'",
                 bad_sizes[i]);
        assert_string_equal(load(yaml, &t, &a), want);
    }
    static const char *const bad_waits[] = {"1", "1.s", ".5s", "0.0000001s", "5 s", "5sec", "1d"};
    for (size_t i = 0; i < sizeof(bad_waits) / sizeof(bad_waits[0]); i++) {
        char yaml[64], want[160];
        snprintf(yaml, sizeof(yaml), "wait: %s\n", bad_waits[i]);
        snprintf(want, sizeof(want), "y.yaml:1:7: 'wait' must be a duration such as 5s, 250ms, 1.5s or 2m, got '%s'",
                 bad_waits[i]);
        assert_string_equal(load(yaml, &t, &a), want);
    }
    assert_string_equal(load("bytes: 2GiB\n", &t, &a),
                        "y.yaml:1:8: 'bytes' must be between 0 and 1073741824, got '2GiB'");
    assert_string_equal(load("bytes: 1025Mi\n", &t, &a),
                        "y.yaml:1:8: 'bytes' must be between 0 and 1073741824, got '1025Mi'");
    assert_string_equal(load("wait: 2h\n", &t, &a), "y.yaml:1:7: 'wait' must be between 0 and 3600000, got '2h'");
    arena_free(&a);
}

static void bad_values_and_keys_say_where(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        const char *want;
    } cases[] = {
        {"count: 101\n", "y.yaml:1:8: 'count' must be between 0 and 100, got '101'"},
        {"count: ten\n", "y.yaml:1:8: 'count' must be a whole number, got 'ten'"},
        {"count: [1]\n", "y.yaml:1:8: 'count' must be a scalar, got a list"},
        {"on: yes\n", "y.yaml:1:5: 'on' must be true or false, got 'yes'"},
        {"color: blue\n", "y.yaml:1:8: 'color' must be one of red, green, got 'blue'"},
        {"tags: []\n", "y.yaml:1:7: 'tags' must not be empty"},
        {"tags: a\n", "y.yaml:1:7: 'tags' must be a list, got a scalar"},
        {"tags: [a, [b]]\n", "y.yaml:1:11: 'tags' must be a scalar, got a list"},
        {"items: [{n: 2}]\n", "y.yaml:1:9: item needs 'id'"},
        {"items: [{id: ''}]\n", "y.yaml:1:14: 'id' must not be empty"},
        {"items: [7]\n", "y.yaml:1:9: item must be a mapping, got a scalar"},
        {"one: {id: a, n: 0}\n", "y.yaml:1:17: 'n' must be between 1 and 9, got '0'"},
        {"name: \"a\\0b\"\n", "y.yaml:1:7: 'name' contains a NUL byte"},
        {"doubled: 1001\n", "y.yaml:1:10: 'doubled' wants 0..1000"},
        {"colour: red\n",
         "y.yaml:1:1: unknown key 'colour' in the file (expected one of: name, count, bytes, wait, on, color, tags, "
         "items, one, doubled)"},
        {"count: 1\ncount: 2\n", "y.yaml:2:1: duplicate key 'count' in the file"},
        {"[a]: 1\n", "y.yaml:1:1: keys of the file must be scalars"},
        {"on: true\n", "y.yaml:1:1: on needs count"},
        {"- a\n", "y.yaml:1:1: the file must be a mapping, got a list"},
        {"", "y.yaml:1:1: the file is empty"},
        {"a: [\n", "y.yaml:2:1: did not find expected node content while parsing a flow node"},
    };
    struct arena a;
    arena_init(&a, 1024);
    struct top t;
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = load(cases[i].yaml, &t, &a);
        if (strcmp(got, cases[i].want) != 0) {
            print_error("case %zu:\n  expected: %s\n  got:      %s\n", i, cases[i].want, got);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_setter_stores_its_kind),
        cmocka_unit_test(sizes_and_durations),
        cmocka_unit_test(bad_values_and_keys_say_where),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
