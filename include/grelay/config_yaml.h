/* The YAML walker under config.c. A kind of object (a listener, a route...)
 * is a struct config_schema: a table of struct config_field, one per key,
 * each naming the setter that reads its kind of value and the offset it is
 * stored at (nginx's ngx_command_t and ngx_conf_set_*_slot). The walker
 * applies the tables to libyaml's document tree and stops at the first
 * error, written as "file:line:col: what is wrong".
 *
 * It knows nothing of the config structs: config.c declares the tables and
 * the setters of its own (an address), and includes this header; nothing
 * here includes config.h. */
#ifndef GRELAY_CONFIG_YAML_H
#define GRELAY_CONFIG_YAML_H

#include "grelay/arena.h"
#include "grelay/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

/* struct config_field.flags */
#define FL_REQUIRED 1u /* the key must be present (and a string not empty) */
#define FL_LOWER 2u    /* lower-case the string, or every string of a list */
#define FL_NONEMPTY 4u /* lists need at least one element */

/* struct config_schema.pos_off when the object keeps no position. */
#define NO_POS ((size_t)-1)

struct config_yaml;
struct config_field;
struct config_schema;

/* One key of a mapping: what it is called, how its value is read and where
 * it is stored. */
struct config_field {
    const char *key; /* the YAML key */
    /* Reads value node v into obj (the object being filled); returns 0, or
     * GR_ERR_CONFIG after writing the error. One of config_yaml_set_*, or a
     * setter of config.c's own. */
    int (*set)(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
    size_t off;                      /* where in obj the value is stored */
    size_t count_off;                /* set_strlist, set_list: where the size_t count is stored */
    const struct config_schema *sub; /* set_list, set_obj: the schema of the sub objects */
    uint64_t min;                    /* set_u32, set_size, set_duration: the least value allowed */
    uint64_t max;                    /* set_u32, set_size, set_duration: the greatest value allowed */
    const char *const *names;        /* set_enum: the names of values 0, 1, ...; NULL-terminated */
    unsigned flags;                  /* FL_* */
    size_t pos_off;                  /* if nonzero: store the value's struct gr_pos here */
};

/* A kind of object: its keys, and what happens before and after them. */
struct config_schema {
    const char *what;                  /* "listener", "route", ... for messages */
    size_t size;                       /* sizeof the struct (for lists of them) */
    size_t pos_off;                    /* where the object's struct gr_pos goes, or NO_POS */
    const struct config_field *fields; /* ended by an entry with key NULL; at most 32 */
    void (*init)(void *obj);           /* sets defaults before the keys are read; may be NULL */
    /* Cross-checks and derives values once every key is read; seen has bit
     * i set when fields[i] was present. Returns 0 or GR_ERR_CONFIG (after
     * writing the error). May be NULL. */
    int (*check)(struct config_yaml *c, void *obj, uint32_t seen, yaml_node_t *node);
};

/* The state of one load. The caller sets arena, name, err and errlen. */
struct config_yaml {
    yaml_document_t *doc; /* the tree being walked; NULL outside config_yaml_load */
    struct arena *arena;  /* where strings and arrays go: the snapshot's arena */
    const char *name;     /* file name for messages */
    char *err;            /* receives the first error, "name:line:col: ..." */
    size_t errlen;        /* bytes at err */
    bool failed;          /* an error is written; later ones are dropped */
    const char **dump;    /* if set: receives the loaded tree as JSON in arena (config_dump.h) */
};

/* Parses data (len bytes of YAML) and fills obj from the root mapping by
 * schema top. Returns 0, or GR_ERR_CONFIG with the error in c->err (a YAML
 * syntax error, an empty file, or the first bad key or value). */
int config_yaml_load(struct config_yaml *c, const char *data, size_t len, const struct config_schema *top, void *obj);
/* Fills obj (size s->size, zeroed by the caller) from a mapping node. */
int config_yaml_parse_object(struct config_yaml *c, const struct config_schema *s, yaml_node_t *node, void *obj);

/* Where node n starts in the file. */
struct gr_pos config_yaml_pos(const yaml_node_t *n);
/* Writes "name:line:col: " and the message into c->err, unless an error is
 * already there; returns GR_ERR_CONFIG. */
int config_yaml_fail_at(struct config_yaml *c, struct gr_pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same at the position of a node. */
#define config_yaml_fail_node(c, node, ...) config_yaml_fail_at((c), config_yaml_pos(node), __VA_ARGS__)
/* 0 when n is a scalar; otherwise fails with "'key' must be a scalar". */
int config_yaml_want_scalar(struct config_yaml *c, yaml_node_t *n, const char *key);
/* The text of a scalar node (NUL-terminated by libyaml). */
static inline const char *config_yaml_scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }
/* Parses len bytes of unsigned decimal (no sign, no spaces); false on junk,
 * an empty string or overflow. */
bool config_yaml_parse_u64(const char *s, size_t len, uint64_t *out);

/* The setters, one per kind of value; each stores at obj + f->off. */
/* const char *: the scalar, copied into the arena (FL_LOWER, FL_REQUIRED). */
int config_yaml_set_str(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* uint32_t: a whole number within [min, max]. */
int config_yaml_set_u32(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* uint32_t bytes within [min, max]: "65536", "64KiB", "64K", "1MiB", "1M", "1GiB". */
int config_yaml_set_size(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* uint64_t bytes within [min, max], the same spellings. */
int config_yaml_set_size64(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* uint64_t milliseconds within [min, max]: "5s", "250ms", "1.5s", "2m", "1h",
 * "100us" (sub-millisecond values round up), "0". */
int config_yaml_set_duration(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* bool: true or false. */
int config_yaml_set_bool(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* int: the index of the scalar in f->names. */
int config_yaml_set_enum(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* const char ** and its size_t count at count_off: a list of scalars
 * (FL_LOWER, FL_NONEMPTY). */
int config_yaml_set_strlist(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* An array of f->sub objects and its size_t count at count_off (FL_NONEMPTY). */
int config_yaml_set_list(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);
/* One f->sub object stored inline. */
int config_yaml_set_obj(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj);

#endif
