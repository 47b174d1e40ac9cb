/* The YAML a unit test's configuration starts from: a listener whose one
 * route sends everything to cluster "backend" (GOOD_HEAD), and that
 * cluster with one endpoint (BACKEND_HEAD: GOOD_HEAD and the cluster's
 * first lines, so a test appends the cluster keys it is about); load()
 * reads it as the file t.yaml. */
#ifndef GRELAY_TEST_CONFIG_FIXTURE_H
#define GRELAY_TEST_CONFIG_FIXTURE_H

#include "grelay/config.h"

#include <string.h>

#define GOOD_HEAD                                                                                                      \
    "listeners:\n"                                                                                                     \
    "  - name: ingress\n"                                                                                              \
    "    address: 127.0.0.1:8080\n"                                                                                    \
    "    virtual_hosts:\n"                                                                                             \
    "      - name: default\n"                                                                                          \
    "        domains: [\"*\"]\n"                                                                                       \
    "        routes:\n"                                                                                                \
    "          - match: { prefix: \"/\" }\n"                                                                           \
    "            cluster: backend\n"

#define BACKEND_HEAD GOOD_HEAD "clusters:\n  - name: backend\n    endpoints: [{address: 127.0.0.1:1}]\n"

static inline struct gr_config *load(const char *yaml, char *err, size_t errlen)
{
    return config_load_buffer("t.yaml", yaml, strlen(yaml), err, errlen);
}

#endif
