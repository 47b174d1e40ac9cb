/* The hash_on: key of a cluster (config_affinity.h). */
#include "grelay/config_affinity.h"

#include <ctype.h>
#include <string.h>

static bool hashing(enum lb_policy_kind k) { return k == LB_RING_HASH || k == LB_MAGLEV; }

/* { header: name }: a lower-cased, valid header name that is not a
 * pseudo-header (":authority" is hash_on: authority). */
static int hash_on_header(struct config_yaml *c, yaml_node_t *v, struct gr_hash_on_cfg *h)
{
    yaml_node_pair_t *pair = v->data.mapping.pairs.start;
    if (v->data.mapping.pairs.top - pair != 1)
        return config_yaml_fail_node(c, v, "hash_on: a mapping must be exactly { header: <name> }");
    yaml_node_t *k = yaml_document_get_node(c->doc, pair->key);
    yaml_node_t *val = yaml_document_get_node(c->doc, pair->value);
    if (k == NULL || k->type != YAML_SCALAR_NODE || strcmp(config_yaml_scalar(k), "header") != 0)
        return config_yaml_fail_node(c, k != NULL ? k : v, "hash_on: unknown key (expected 'header')");
    if (config_yaml_want_scalar(c, val, "header") != GR_OK)
        return GR_ERR_CONFIG;
    const char *name = config_yaml_scalar(val);
    size_t len = strlen(name);
    if (len == 0 || name[0] == ':')
        return config_yaml_fail_node(c, val,
                                     "hash_on: header '%s' must be a header name (for :authority write "
                                     "hash_on: authority)",
                                     name);
    char *low = arena_strndup(c->arena, name, len);
    if (low == NULL)
        return config_yaml_fail_node(c, val, "out of memory");
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)low[i];
        if (ch <= ' ' || ch >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", ch) != NULL)
            return config_yaml_fail_node(c, val, "hash_on: header '%s' is not a valid header name", name);
        low[i] = (char)tolower(ch);
    }
    h->kind = HASH_ON_HEADER;
    h->header = low;
    return GR_OK;
}

int config_set_hash_on(struct config_yaml *c, const struct config_field *f, yaml_node_t *v, void *obj)
{
    struct gr_hash_on_cfg *h = (struct gr_hash_on_cfg *)((char *)obj + f->off);
    h->pos = config_yaml_pos(v);
    if (v->type == YAML_MAPPING_NODE)
        return hash_on_header(c, v, h);
    if (v->type == YAML_SCALAR_NODE && strcmp(config_yaml_scalar(v), "authority") == 0)
        h->kind = HASH_ON_AUTHORITY;
    else if (v->type == YAML_SCALAR_NODE && strcmp(config_yaml_scalar(v), "peer") == 0)
        h->kind = HASH_ON_PEER;
    else
        return config_yaml_fail_node(c, v, "'hash_on' must be authority, peer or { header: <name> }, got '%s'",
                                     v->type == YAML_SCALAR_NODE ? config_yaml_scalar(v) : "a list");
    return GR_OK;
}

int config_affinity_check(struct config_yaml *c, const struct gr_cluster_cfg *cl, yaml_node_t *node)
{
    bool has = cl->hash_on.kind != HASH_ON_NONE;
    if (has && !hashing(cl->lb_policy))
        return config_yaml_fail_at(c, cl->hash_on.pos,
                                   "cluster '%s': hash_on needs lb_policy: ring_hash or maglev (the other policies "
                                   "do not hash)",
                                   cl->name);
    if (!has && hashing(cl->lb_policy)) {
        const char *p = cl->lb_policy == LB_RING_HASH ? "ring_hash" : "maglev";
        if (cl->lb_policy_pos.line == 0)
            return config_yaml_fail_node(c, node, "cluster '%s': lb_policy %s needs hash_on", cl->name, p);
        return config_yaml_fail_at(c, cl->lb_policy_pos,
                                   "cluster '%s': lb_policy %s needs hash_on (authority, peer or { header: <name> })",
                                   cl->name, p);
    }
    return GR_OK;
}
