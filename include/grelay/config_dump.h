/* GET /config_dump's text: a loaded YAML tree as JSON, secrets masked.
 * Built once per snapshot at load time (config.c), kept in its arena.
 *
 * Mappings become objects, sequences arrays; a plain (unquoted) scalar
 * that reads as a JSON number, true, false or null (null, ~ or empty) is
 * written as one, every other scalar as a string. Masked, as "[redacted]":
 * the value (whatever its shape) of a key named private_key, password,
 * secret or token, and any scalar holding "-----BEGIN" or "PRIVATE KEY"
 * (PEM written inline). A private_key value is a file path, not key
 * material, but it is masked all the same (docs/observability.md). */
#ifndef GRELAY_CONFIG_DUMP_H
#define GRELAY_CONFIG_DUMP_H

#include "grelay/arena.h"

#include <yaml.h>

#define CONFIG_DUMP_REDACTED "[redacted]"
/* Bounds, against aliases that expand a small file into a huge tree. */
#define CONFIG_DUMP_MAX_DEPTH 64
#define CONFIG_DUMP_MAX_BYTES (16u << 20)

/* The JSON of node (of doc), NUL-terminated, in arena; NULL when out of
 * memory. A tree past the bounds gives {"error": "..."} instead. */
const char *config_dump_json(yaml_document_t *doc, yaml_node_t *node, struct arena *arena);

#endif
