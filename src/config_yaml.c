/* The YAML walker and the typed setters (see config_yaml.h). Messages name
 * the file, line and column of the node at fault. */
#include "grelay/config_yaml.h"
#include "grelay/config_dump.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct gr_pos config_yaml_pos(const yaml_node_t *n)
{
    struct gr_pos p = {(uint32_t)n->start_mark.line + 1, (uint32_t)n->start_mark.column + 1};
    return p;
}

int config_yaml_fail_at(struct config_yaml *c, struct gr_pos p, const char *fmt, ...)
{
    if (c->failed)
        return GR_ERR_CONFIG;
    c->failed = true;
    int n = snprintf(c->err, c->errlen, "%s:%u:%u: ", c->name, p.line, p.col);
    if (n < 0 || (size_t)n >= c->errlen)
        return GR_ERR_CONFIG;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return GR_ERR_CONFIG;
}

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

int config_yaml_want_scalar(struct config_yaml *c, yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SCALAR_NODE)
        return config_yaml_fail_node(c, n, "'%s' must be a scalar, got %s", key, node_kind(n));
    return GR_OK;
}

bool config_yaml_parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static int parse_size(const char *s, uint64_t *out)
{
    size_t len = strlen(s), i = 0;
    while (i < len && isdigit((unsigned char)s[i]))
        i++;
    uint64_t v;
    if (!config_yaml_parse_u64(s, i, &v))
        return -1;
    const char *suf = s + i;
    uint64_t mul;
    if (*suf == '\0' || strcmp(suf, "B") == 0)
        mul = 1;
    else if (strcmp(suf, "K") == 0 || strcmp(suf, "KiB") == 0 || strcmp(suf, "Ki") == 0)
        mul = 1024;
    else if (strcmp(suf, "M") == 0 || strcmp(suf, "MiB") == 0 || strcmp(suf, "Mi") == 0)
        mul = 1024 * 1024;
    else if (strcmp(suf, "G") == 0 || strcmp(suf, "GiB") == 0 || strcmp(suf, "Gi") == 0)
        mul = 1024 * 1024 * 1024;
    else
        return -1;
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* "1.5s", "250ms", "100us", "2m", "1h", "0" -> milliseconds (sub-ms rounds up). */
static int parse_duration_ms(const char *s, uint64_t *out)
{
    size_t len = strlen(s), i = 0;
    while (i < len && isdigit((unsigned char)s[i]))
        i++;
    uint64_t whole;
    if (!config_yaml_parse_u64(s, i, &whole))
        return -1;
    uint64_t frac = 0, frac_div = 1;
    if (s[i] == '.') {
        i++;
        size_t fs = i;
        while (i < len && isdigit((unsigned char)s[i]) && i - fs < 6) {
            frac = frac * 10 + (uint64_t)(s[i] - '0');
            frac_div *= 10;
            i++;
        }
        if (i == fs || isdigit((unsigned char)s[i]))
            return -1;
    }
    const char *u = s + i;
    uint64_t unit_us;
    if (strcmp(u, "h") == 0)
        unit_us = 3600000000ull;
    else if (strcmp(u, "m") == 0)
        unit_us = 60000000ull;
    else if (strcmp(u, "s") == 0)
        unit_us = 1000000ull;
    else if (strcmp(u, "ms") == 0)
        unit_us = 1000ull;
    else if (strcmp(u, "us") == 0)
        unit_us = 1ull;
    else if (*u == '\0' && whole == 0 && frac == 0)
        unit_us = 1ull;
    else
        return -1;
    if (whole > UINT64_MAX / unit_us / 2)
        return -1;
    uint64_t us = whole * unit_us + frac * unit_us / frac_div;
    *out = (us + 999) / 1000;
    return 0;
}

/* ---- typed setters ----
 * One per kind of value, as nginx's ngx_conf_set_*_slot: each checks the
 * value node v of field f and stores it at obj + f->off, or writes the
 * error and returns GR_ERR_CONFIG. */

#define FIELD_PTR(obj, off) ((char *)(obj) + (off))

static void lower_case(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* const char *: the scalar, copied into the arena. */
int config_yaml_set_str(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    char *s = arena_strndup(c->arena, config_yaml_scalar(v), v->data.scalar.length);
    if (s == NULL)
        return config_yaml_fail_node(c, v, "out of memory");
    if (strlen(s) != v->data.scalar.length)
        return config_yaml_fail_node(c, v, "'%s' contains a NUL byte", f->key);
    if (f->flags & FL_LOWER)
        lower_case(s);
    if (s[0] == '\0' && (f->flags & FL_REQUIRED))
        return config_yaml_fail_node(c, v, "'%s' must not be empty", f->key);
    *(const char **)FIELD_PTR(obj, f->off) = s;
    return GR_OK;
}

static int parse_whole(const char *s, uint64_t *out) { return config_yaml_parse_u64(s, strlen(s), out) ? 0 : -1; }

/* The number in v as parse reads it (expect says what it wanted), within
 * [f->min, f->max]. */
static int number(struct config_yaml *c, const struct config_field *f, yaml_node_t *v,
                  int (*parse)(const char *, uint64_t *), const char *expect, uint64_t *out)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    const char *s = config_yaml_scalar(v);
    if (parse(s, out) != 0)
        return config_yaml_fail_node(c, v, "'%s' must be %s, got '%s'", f->key, expect, s);
    if (*out < f->min || *out > f->max)
        return config_yaml_fail_node(c, v, "'%s' must be between %llu and %llu, got '%s'", f->key,
                                     (unsigned long long)f->min, (unsigned long long)f->max, s);
    return GR_OK;
}

/* uint32_t: a whole number within [min, max]. */
int config_yaml_set_u32(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    uint64_t u = 0;
    if (number(c, f, v, parse_whole, "a whole number", &u))
        return GR_ERR_CONFIG;
    *(uint32_t *)FIELD_PTR(obj, f->off) = (uint32_t)u;
    return GR_OK;
}

/* uint32_t bytes within [min, max]: "65536", "64KiB", "1MiB" (see parse_size). */
int config_yaml_set_size(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    uint64_t u = 0;
    if (number(c, f, v, parse_size, "a size such as 65536, 64KiB or 1MiB", &u))
        return GR_ERR_CONFIG;
    *(uint32_t *)FIELD_PTR(obj, f->off) = (uint32_t)u;
    return GR_OK;
}

/* uint64_t bytes within [min, max]: the same spellings, for budgets past 4 GiB. */
int config_yaml_set_size64(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    uint64_t u = 0;
    if (number(c, f, v, parse_size, "a size such as 512MiB or 2GiB", &u))
        return GR_ERR_CONFIG;
    *(uint64_t *)FIELD_PTR(obj, f->off) = u;
    return GR_OK;
}

/* uint64_t milliseconds within [min, max]: "5s", "250ms", "1.5s", "2m", "1h". */
int config_yaml_set_duration(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    uint64_t u = 0;
    if (number(c, f, v, parse_duration_ms, "a duration such as 5s, 250ms, 1.5s or 2m", &u))
        return GR_ERR_CONFIG;
    *(uint64_t *)FIELD_PTR(obj, f->off) = u;
    return GR_OK;
}

/* bool: true or false. */
int config_yaml_set_bool(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    const char *s = config_yaml_scalar(v);
    if (strcmp(s, "true") == 0)
        *(bool *)FIELD_PTR(obj, f->off) = true;
    else if (strcmp(s, "false") == 0)
        *(bool *)FIELD_PTR(obj, f->off) = false;
    else
        return config_yaml_fail_node(c, v, "'%s' must be true or false, got '%s'", f->key, s);
    return GR_OK;
}

/* int: the index of the scalar in f->names. */
int config_yaml_set_enum(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (config_yaml_want_scalar(c, v, f->key))
        return GR_ERR_CONFIG;
    for (int i = 0; f->names[i] != NULL; i++) {
        if (strcmp(config_yaml_scalar(v), f->names[i]) == 0) {
            *(int *)FIELD_PTR(obj, f->off) = i;
            return GR_OK;
        }
    }
    char list[256] = "";
    for (int i = 0; f->names[i] != NULL; i++) {
        strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
        strncat(list, f->names[i], sizeof(list) - strlen(list) - 1);
    }
    return config_yaml_fail_node(c, v, "'%s' must be one of %s, got '%s'", f->key, list, config_yaml_scalar(v));
}

/* The number of items of a sequence node, which must not be empty with
 * FL_NONEMPTY; GR_ERR_CONFIG when v is no sequence or breaks that rule. */
static int sequence(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, size_t *n)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return config_yaml_fail_node(c, v, "'%s' must be a list, got %s", f->key, node_kind(v));
    *n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (*n == 0 && (f->flags & FL_NONEMPTY))
        return config_yaml_fail_node(c, v, "'%s' must not be empty", f->key);
    return GR_OK;
}

/* const char ** at off and its size_t count at count_off: a list of scalars. */
int config_yaml_set_strlist(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    size_t n;
    if (sequence(c, f, v, &n))
        return GR_ERR_CONFIG;
    const char **arr = arena_alloc(c->arena, (n ? n : 1) * sizeof(*arr));
    if (arr == NULL)
        return config_yaml_fail_node(c, v, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        if (config_yaml_want_scalar(c, it, f->key))
            return GR_ERR_CONFIG;
        char *s = arena_strndup(c->arena, config_yaml_scalar(it), it->data.scalar.length);
        if (s == NULL)
            return config_yaml_fail_node(c, v, "out of memory");
        if (f->flags & FL_LOWER)
            lower_case(s);
        arr[i] = s;
    }
    *(const char ***)FIELD_PTR(obj, f->off) = arr;
    *(size_t *)FIELD_PTR(obj, f->count_off) = n;
    return GR_OK;
}

/* An array of f->sub objects at off and its size_t count at count_off. */
int config_yaml_set_list(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    size_t n;
    if (sequence(c, f, v, &n))
        return GR_ERR_CONFIG;
    char *arr = arena_alloc(c->arena, (n ? n : 1) * f->sub->size);
    if (arr == NULL)
        return config_yaml_fail_node(c, v, "out of memory");
    memset(arr, 0, (n ? n : 1) * f->sub->size);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        if (config_yaml_parse_object(c, f->sub, it, arr + i * f->sub->size))
            return GR_ERR_CONFIG;
    }
    *(void **)FIELD_PTR(obj, f->off) = arr;
    *(size_t *)FIELD_PTR(obj, f->count_off) = n;
    return GR_OK;
}

/* One f->sub object stored inline at off. */
int config_yaml_set_obj(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    return config_yaml_parse_object(c, f->sub, v, FIELD_PTR(obj, f->off));
}

static int parse_field(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    if (f->set(c, f, v, obj))
        return GR_ERR_CONFIG;
    if (f->pos_off)
        *(struct gr_pos *)FIELD_PTR(obj, f->pos_off) = config_yaml_pos(v);
    return GR_OK;
}

int config_yaml_parse_object(struct config_yaml *c, const struct config_schema *s, yaml_node_t *node, void *obj)
{
    if (node->type != YAML_MAPPING_NODE)
        return config_yaml_fail_node(c, node, "%s must be a mapping, got %s", s->what, node_kind(node));
    if (s->init)
        s->init(obj);
    if (s->pos_off != NO_POS)
        *(struct gr_pos *)((char *)obj + s->pos_off) = config_yaml_pos(node);
    uint32_t seen = 0;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return config_yaml_fail_node(c, k, "keys of %s must be scalars", s->what);
        int idx = -1;
        for (int i = 0; s->fields[i].key != NULL; i++) {
            if (strcmp(s->fields[i].key, config_yaml_scalar(k)) == 0) {
                idx = i;
                break;
            }
        }
        if (idx < 0) {
            char list[512] = "";
            for (int i = 0; s->fields[i].key != NULL; i++) {
                strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
                strncat(list, s->fields[i].key, sizeof(list) - strlen(list) - 1);
            }
            return config_yaml_fail_node(c, k, "unknown key '%s' in %s (expected one of: %s)", config_yaml_scalar(k),
                                         s->what, list);
        }
        if (seen & (1u << idx))
            return config_yaml_fail_node(c, k, "duplicate key '%s' in %s", config_yaml_scalar(k), s->what);
        seen |= 1u << idx;
        if (parse_field(c, &s->fields[idx], v, obj))
            return GR_ERR_CONFIG;
    }
    for (int i = 0; s->fields[i].key != NULL; i++) {
        if ((s->fields[i].flags & FL_REQUIRED) && !(seen & (1u << i)))
            return config_yaml_fail_node(c, node, "%s needs '%s'", s->what, s->fields[i].key);
    }
    if (s->check)
        return s->check(c, obj, seen, node);
    return GR_OK;
}

static const char *yaml_problem(const yaml_parser_t *p) { return p->problem ? p->problem : "malformed YAML"; }

int config_yaml_load(struct config_yaml *c, const char *data, size_t len, const struct config_schema *top, void *obj)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(c->err, c->errlen, "%s: out of memory", c->name);
        c->failed = true;
        return GR_ERR_CONFIG;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        struct gr_pos p = {(uint32_t)parser.problem_mark.line + 1, (uint32_t)parser.problem_mark.column + 1};
        config_yaml_fail_at(c, p, "%s%s%s", yaml_problem(&parser), parser.context ? " " : "",
                            parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return GR_ERR_CONFIG;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    c->doc = &doc;
    int rc;
    if (root == NULL)
        rc = config_yaml_fail_at(c, (struct gr_pos){1, 1}, "the file is empty");
    else
        rc = config_yaml_parse_object(c, top, root, obj);
    if (rc == GR_OK && c->dump != NULL && (*c->dump = config_dump_json(&doc, root, c->arena)) == NULL)
        rc = config_yaml_fail_at(c, (struct gr_pos){1, 1}, "out of memory");
    c->doc = NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}
