/* Endpoint sets. */
#include "grelay/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct endpoint_set *cluster_set_new(size_t n)
{
    struct endpoint_set *s = calloc(1, sizeof(*s) + n * sizeof(s->eps[0]));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->n = n;
    return s;
}

void cluster_set_ref(struct endpoint_set *s) { atomic_fetch_add(&s->refs, 1); }

void cluster_set_unref(struct endpoint_set *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
        free(s);
}

void cluster_endpoint_fill(struct endpoint *e, const struct sockaddr *sa, socklen_t len, uint16_t port,
                           const char *host, uint32_t weight)
{
    char ip[INET6_ADDRSTRLEN] = "";
    memset(&e->address.ss, 0, sizeof(e->address.ss));
    memcpy(&e->address.ss, sa, len);
    e->address.len = len;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&e->address.ss;
        v4->sin_port = htons(port);
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
        snprintf(e->text, sizeof(e->text), "%s:%u", ip, port);
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&e->address.ss;
        v6->sin6_port = htons(port);
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip));
        snprintf(e->text, sizeof(e->text), "[%s]:%u", ip, port);
    }
    e->address.text = e->text;
    snprintf(e->host, sizeof(e->host), "%s", host ? host : ip);
    e->weight = weight;
}

struct endpoint_set *cluster_static_set(const struct gr_cluster_cfg *cl)
{
    size_t n = 0;
    for (size_t i = 0; i < cl->n_endpoints; i++)
        n += !cl->endpoints[i].is_name;
    struct endpoint_set *s = cluster_set_new(n);
    if (s == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < cl->n_endpoints; i++) {
        const struct gr_endpoint_cfg *ep = &cl->endpoints[i];
        if (ep->is_name)
            continue;
        cluster_endpoint_fill(&s->eps[k++], (const struct sockaddr *)&ep->address.ss, ep->address.len, ep->port, NULL,
                              ep->weight);
    }
    return s;
}
