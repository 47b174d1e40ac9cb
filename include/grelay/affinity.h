/* The key of a call for the hashing policies (ring_hash, maglev): what the
 * cluster's hash_on names, hashed (docs/affinity.md); and the client's
 * address, read once per connection, which the key and the access log
 * share. */
#ifndef GRELAY_AFFINITY_H
#define GRELAY_AFFINITY_H

#include "grelay/balancer.h"
#include "grelay/config_types.h"

struct downstream;
struct gr_hdr;
struct hdr_list;

/* A call's key for cluster cl: the first value of the hash_on header (of
 * hdrs), the :authority (lower-cased) or the IP address (without port) of
 * the client of d. has is false when cl does not hash, or the call has no
 * such value (a missing or empty header). */
struct lb_key affinity_key(const struct gr_cluster_cfg *cl, const struct hdr_list *hdrs, const struct gr_hdr *authority,
                           struct downstream *d);
/* The client's "ip:port" ("[v6]:port"), read with getpeername once per
 * connection and kept in d->peer; "" when it cannot be read. */
const char *affinity_peer(struct downstream *d);

#endif
