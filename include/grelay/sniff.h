/* How a downstream connection's protocol is chosen. On TLS listeners: the
 * handshake, then ALPN (h2, or http/1.1 for gRPC-Web; a client offering
 * neither is refused by the handshake). On cleartext listeners with
 * grpc_web: the HTTP/2 connection preface means h2c (prior knowledge),
 * anything else HTTP/1.1 (Envoy's codec_type: AUTO). */
#ifndef GRELAY_SNIFF_H
#define GRELAY_SNIFF_H

#include "grelay/config.h"

struct worker;

void sniff_accept(struct worker *w, const struct gr_listener_cfg *l, int fd);
/* Closes every connection still being sniffed (worker shutdown). */
void sniff_close_all(struct worker *w);
/* Closes those that came in on the listener of this slot (a reload removed it). */
void sniff_close_slot(struct worker *w, size_t slot);

#endif
