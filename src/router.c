/* Route matching over the immutable config. Lists are short; a linear scan
 * over precomputed lengths beats building indexes for them. */
#include "grelay/router.h"

#include <string.h>
#include <strings.h>

/* Strips ":port" from "host:port" and "[v6]:port". */
static size_t host_len(const char *a, size_t len)
{
    if (len > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', len);
        return close ? (size_t)(close - a) + 1 : len;
    }
    const char *colon = memchr(a, ':', len);
    return colon ? (size_t)(colon - a) : len;
}

const struct gr_vhost_cfg *router_find_vhost(const struct gr_listener_cfg *l, const char *authority, size_t len)
{
    len = host_len(authority, len);
    const struct gr_vhost_cfg *suffix = NULL, *prefix = NULL, *any = NULL;
    size_t suffix_len = 0, prefix_len = 0;
    for (size_t v = 0; v < l->n_vhosts; v++) {
        const struct gr_vhost_cfg *vh = &l->vhosts[v];
        for (size_t d = 0; d < vh->n_domains; d++) {
            const char *dom = vh->domains[d];
            size_t dl = strlen(dom);
            if (dl == 1 && dom[0] == '*') {
                if (any == NULL)
                    any = vh;
            } else if (dom[0] == '*') {
                /* "*.example.com": the host must be longer and end with ".example.com" */
                size_t sl = dl - 1;
                if (len > sl && strncasecmp(authority + len - sl, dom + 1, sl) == 0 && sl > suffix_len) {
                    suffix = vh;
                    suffix_len = sl;
                }
            } else if (dom[dl - 1] == '*') {
                size_t pl = dl - 1;
                if (len > pl && strncasecmp(authority, dom, pl) == 0 && pl > prefix_len) {
                    prefix = vh;
                    prefix_len = pl;
                }
            } else if (dl == len && strncasecmp(authority, dom, len) == 0) {
                return vh;
            }
        }
    }
    return suffix ? suffix : prefix ? prefix : any;
}

static bool headers_match(const struct gr_match_cfg *m, const struct hdr_list *headers)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        const struct gr_header_match_cfg *hm = &m->headers[i];
        const struct gr_hdr *h = headers ? headers_find(headers, hm->name) : NULL;
        if (hm->exact != NULL) {
            if (h == NULL || strlen(hm->exact) != h->valuelen || memcmp(hm->exact, h->value, h->valuelen) != 0)
                return false;
        } else if (hm->present != (h != NULL)) {
            return false;
        }
    }
    return true;
}

const struct gr_route_cfg *router_find_route(const struct gr_vhost_cfg *vh, const char *path, size_t path_len,
                                             const struct hdr_list *headers)
{
    /* The query string never takes part in gRPC routing. */
    const char *q = memchr(path, '?', path_len);
    if (q != NULL)
        path_len = (size_t)(q - path);
    for (size_t r = 0; r < vh->n_routes; r++) {
        const struct gr_route_cfg *rt = &vh->routes[r];
        const struct gr_match_cfg *m = &rt->match;
        if (m->kind == ROUTE_EXACT) {
            if (path_len != m->path_len || memcmp(path, m->path, path_len) != 0)
                continue;
        } else if (path_len < m->path_len || memcmp(path, m->path, m->path_len) != 0) {
            continue;
        }
        if (headers_match(m, headers))
            return rt;
    }
    return NULL;
}

const struct gr_route_cfg *router_match(const struct gr_listener_cfg *l, const char *authority, size_t alen,
                                        const char *path, size_t plen, const struct hdr_list *headers)
{
    const struct gr_vhost_cfg *vh = router_find_vhost(l, authority, alen);
    return vh ? router_find_route(vh, path, plen, headers) : NULL;
}
