/* CORS decisions for browser calls: which origins a policy grants, and the
 * preflight answer. The policy itself is config (struct gr_cors_cfg). */
#ifndef GRELAY_CORS_H
#define GRELAY_CORS_H

#include "grelay/config.h"

#include <stdbool.h>
#include <stddef.h>

/* The policy that applies to a route: its own, else its virtual host's, else NULL. */
const struct gr_cors_cfg *cors_policy(const struct gr_vhost_cfg *vh, const struct gr_route_cfg *route);
/* Whether origin (as sent, e.g. "https://app.example.com") is allowed:
 * exact entries compare case-insensitively; "*" allows any; one '*' in an
 * entry stands for a non-empty run without '/' or ':'. */
bool cors_origin_allowed(const struct gr_cors_cfg *c, const char *origin, size_t len);

#endif
