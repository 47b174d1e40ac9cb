/* What the client sends of a call: its header fields collected into the
 * stream (pseudo headers, hop-by-hop ones dropped, the listener's size
 * and field-count limits), then, once complete, the call admitted or answered here: the
 * route, gRPC-Web detection, CORS (a preflight is answered here), the
 * HTTP/1.1-needs-gRPC-Web rule, the deadline from grpc-timeout and the
 * route; then its body, queued for the upstream. Sits above stream.c: the client sides call it, it calls the
 * stream. */
#ifndef GRELAY_REQUEST_H
#define GRELAY_REQUEST_H

#include "grelay/stream.h"

/* A request header field, or a trailer once the headers are done. Each
 * block (the head, then the trailers) is held to the listener's
 * max_request_headers, counting 32 + name + value a field as RFC 9113
 * does, and to max_request_header_fields (pseudo-headers included). Past
 * either, fields are dropped without a copy and the call is answered
 * RESOURCE_EXHAUSTED naming the limit: a head when it is complete, trailers
 * at once. Returns GR_OK; GR_ERR_NOMEM; or GR_ERR_LIMIT once the block has
 * gone twice past a limit: the caller then stops reading it (HTTP/2 resets
 * the stream), so a block that decompresses to megabytes costs no more
 * than two blocks at the limit. */
int request_on_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* The request's header block is complete: route and start the call, or
 * answer it. */
void request_on_headers_done(struct stream *s);
/* The same without the start: true when the call is routed and admitted
 * and stream_start() is the caller's (HTTP/2 starts the calls of one read
 * at its end, so a stream reset within that read never goes upstream);
 * false when it was answered here. */
bool request_headers_ready(struct stream *s);
/* Request body bytes, as on the wire: gRPC-Web decoded and checked, then
 * queued for the upstream (or given back at once when no attempt will
 * take them). */
void request_on_data(struct stream *s, const uint8_t *data, size_t len);

#endif
