/* The config as JSON with secrets masked (see include/grelay/config_dump.h). */
#include "grelay/config_dump.h"
#include "grelay/sbuf.h"

#include <stdbool.h>
#include <string.h>

/* Keys whose value is never shown. */
static const char *const secret_keys[] = {"private_key", "password", "secret", "token", NULL};

static bool secret_key(const char *k)
{
    for (size_t i = 0; secret_keys[i] != NULL; i++)
        if (strcmp(k, secret_keys[i]) == 0)
            return true;
    return false;
}

/* PEM or key material written inline. */
static bool secret_text(const char *s) { return strstr(s, "-----BEGIN") != NULL || strstr(s, "PRIVATE KEY") != NULL; }

/* Whether s (n bytes) is a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i == n || s[i] < '0' || s[i] > '9')
        return false;
    if (s[i] == '0')
        i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    return i == n;
}

static void scalar(struct gr_sbuf *out, const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (secret_text(s)) {
        sbuf_puts(out, "\"" CONFIG_DUMP_REDACTED "\"");
        return;
    }
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0) {
            sbuf_puts(out, "null");
            return;
        }
        if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0 || json_number(s, len)) {
            sbuf_add(out, s, len);
            return;
        }
    }
    sbuf_json_str(out, s, len);
}

/* Writes node; false once past CONFIG_DUMP_MAX_DEPTH. */
static bool node_json(struct gr_sbuf *out, yaml_document_t *doc, yaml_node_t *n, int depth)
{
    if (depth > CONFIG_DUMP_MAX_DEPTH || out->failed)
        return false;
    switch (n->type) {
    case YAML_SCALAR_NODE: scalar(out, n); return true;
    case YAML_SEQUENCE_NODE:
        sbuf_puts(out, "[");
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            if (it != n->data.sequence.items.start)
                sbuf_puts(out, ",");
            if (!node_json(out, doc, yaml_document_get_node(doc, *it), depth + 1))
                return false;
        }
        sbuf_puts(out, "]");
        return true;
    case YAML_MAPPING_NODE:
        sbuf_puts(out, "{");
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            yaml_node_t *v = yaml_document_get_node(doc, p->value);
            if (p != n->data.mapping.pairs.start)
                sbuf_puts(out, ",");
            bool ks = k->type == YAML_SCALAR_NODE;
            /* A key that is not a scalar (the loader refuses those) is shown as its kind. */
            const char *key = ks ? (const char *)k->data.scalar.value : "[not a scalar]";
            sbuf_json_str(out, key, strlen(key));
            sbuf_puts(out, ":");
            if (ks && secret_key(key))
                sbuf_puts(out, "\"" CONFIG_DUMP_REDACTED "\"");
            else if (!node_json(out, doc, v, depth + 1))
                return false;
        }
        sbuf_puts(out, "}");
        return true;
    default: sbuf_puts(out, "null"); return true;
    }
}

const char *config_dump_json(yaml_document_t *doc, yaml_node_t *node, struct arena *arena)
{
    struct gr_sbuf out;
    sbuf_init(&out);
    out.max = CONFIG_DUMP_MAX_BYTES;
    const char *text;
    size_t len;
    bool ok = node_json(&out, doc, node, 0) && !out.failed;
    static const char big[] = "{\"error\":\"the config is too large or too deeply nested to dump\"}";
    if (ok) {
        text = out.p != NULL ? out.p : "null";
        len = out.p != NULL ? out.len : 4;
    } else {
        text = big;
        len = sizeof(big) - 1;
    }
    char *copy = arena_strndup(arena, text, len);
    sbuf_free(&out);
    return copy;
}
