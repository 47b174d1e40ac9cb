/* Route table: :authority -> virtual host -> first matching route. */
#ifndef GRELAY_ROUTER_H
#define GRELAY_ROUTER_H

#include "grelay/config.h"
#include "grelay/headers.h"

/* The virtual host serving this authority (port ignored), or NULL.
 * Precedence: exact name, longest "*.suffix", longest "prefix.*", "*". */
const struct gr_vhost_cfg *router_find_vhost(const struct gr_listener_cfg *l, const char *authority, size_t len);
/* The first route of vh matching path and headers, or NULL. */
const struct gr_route_cfg *router_find_route(const struct gr_vhost_cfg *vh, const char *path, size_t path_len,
                                             const struct hdr_list *headers);
/* Both steps; NULL when nothing matches. */
const struct gr_route_cfg *router_match(const struct gr_listener_cfg *l, const char *authority, size_t alen,
                                        const char *path, size_t plen, const struct hdr_list *headers);

#endif
