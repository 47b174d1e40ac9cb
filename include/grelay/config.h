/* Configuration snapshot: loads a YAML file into the immutable structs of
 * config_types.h, validated. */
#ifndef GRELAY_CONFIG_H
#define GRELAY_CONFIG_H

#include "grelay/config_types.h"

#include <stddef.h>

/* Loads and validates a file. On failure returns NULL and writes
 * "file:line:col: what is wrong" into err. */
struct gr_config *config_load_file(const char *path, char *err, size_t errlen);
/* The same from memory; name is used in error messages. */
struct gr_config *config_load_buffer(const char *name, const char *data, size_t len, char *err, size_t errlen);
/* Frees cfg at once, whoever holds it (--check, a failed start). */
void config_free(struct gr_config *cfg);
/* A loaded snapshot starts with one reference (the loader's). ref takes
 * one more (any thread) and returns cfg; unref gives one back and frees
 * the snapshot with the last (SSL_CTXs too: connections made from them
 * keep theirs). A reload publishes a new snapshot beside the old one. */
struct gr_config *config_ref(struct gr_config *cfg);
void config_unref(struct gr_config *cfg);
/* Parses an IP literal with a port, "a.b.c.d:port" or "[ipv6]:port", into
 * out; out->text points at text (not copied). Returns 0, or GR_ERR_CONFIG
 * with *why saying what is wrong ("port must be 1..65535", ...). */
int config_parse_addr(const char *text, struct gr_addr *out, const char **why);

#endif
