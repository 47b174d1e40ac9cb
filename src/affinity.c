/* The key of a call for ring_hash and maglev (affinity.h). */
#include "grelay/affinity.h"
#include "grelay/downstream.h"
#include "grelay/headers.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

const char *affinity_peer(struct downstream *d)
{
    if (d->peer[0] != '\0' || d->io.fd < 0)
        return d->peer;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";
    if (getpeername(d->io.fd, (struct sockaddr *)&ss, &len) != 0)
        return d->peer;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(d->peer, sizeof(d->peer), "%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(d->peer, sizeof(d->peer), "[%s]:%u", host, ntohs(a->sin6_port));
    }
    return d->peer;
}

static struct lb_key key_of(const void *p, size_t len)
{
    if (len == 0)
        return (struct lb_key){false, 0};
    return (struct lb_key){true, balancer_hash64(p, len, 0)};
}

/* The IP of "ip:port" or "[v6]:port". */
static struct lb_key peer_key(struct downstream *d)
{
    const char *peer = affinity_peer(d);
    const char *colon = strrchr(peer, ':');
    if (colon == NULL)
        return (struct lb_key){false, 0};
    if (peer[0] == '[')
        return key_of(peer + 1, (size_t)(colon - peer) - 2);
    return key_of(peer, (size_t)(colon - peer));
}

/* Host names are case-insensitive: the key is the lower-cased authority. */
static struct lb_key authority_key(const struct gr_hdr *a)
{
    char low[256];
    if (a->value == NULL || a->valuelen >= sizeof(low))
        return key_of(a->value, a->value != NULL ? a->valuelen : 0);
    for (uint32_t i = 0; i < a->valuelen; i++)
        low[i] = (char)tolower(a->value[i]);
    return key_of(low, a->valuelen);
}

struct lb_key affinity_key(const struct gr_cluster_cfg *cl, const struct hdr_list *hdrs, const struct gr_hdr *authority,
                           struct downstream *d)
{
    switch (cl->hash_on.kind) {
    case HASH_ON_HEADER: {
        const struct gr_hdr *h = headers_find(hdrs, cl->hash_on.header);
        return h != NULL ? key_of(h->value, h->valuelen) : (struct lb_key){false, 0};
    }
    case HASH_ON_AUTHORITY: return authority_key(authority);
    case HASH_ON_PEER: return peer_key(d);
    case HASH_ON_NONE: break;
    }
    return (struct lb_key){false, 0};
}
