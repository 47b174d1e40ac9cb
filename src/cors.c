/* CORS origin matching. */
#include "grelay/cors.h"

#include <string.h>
#include <strings.h>

const struct gr_cors_cfg *cors_policy(const struct gr_vhost_cfg *vh, const struct gr_route_cfg *route)
{
    if (route != NULL && route->cors.set)
        return &route->cors;
    if (vh != NULL && vh->cors.set)
        return &vh->cors;
    return NULL;
}

static bool glob_match(const char *pat, const char *s, size_t len)
{
    const char *star = strchr(pat, '*');
    if (star == NULL)
        return strlen(pat) == len && strncasecmp(pat, s, len) == 0;
    size_t pre = (size_t)(star - pat), post = strlen(star + 1);
    if (len <= pre + post || strncasecmp(pat, s, pre) != 0 || strncasecmp(star + 1, s + len - post, post) != 0)
        return false;
    for (size_t i = pre; i < len - post; i++)
        if (s[i] == '/' || s[i] == ':')
            return false;
    return true;
}

bool cors_origin_allowed(const struct gr_cors_cfg *c, const char *origin, size_t len)
{
    if (c == NULL || len == 0)
        return false;
    for (size_t i = 0; i < c->n_allow_origins; i++) {
        const char *p = c->allow_origins[i];
        if ((p[0] == '*' && p[1] == '\0') || glob_match(p, origin, len))
            return true;
    }
    return false;
}
