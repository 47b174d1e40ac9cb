/* The head of a call's request: its header fields collected into the
 * stream (pseudo headers, hop-by-hop ones dropped, the listener's size
 * limit), then, once complete, the call admitted or answered here: the
 * route, gRPC-Web detection, CORS (a preflight is answered here), the
 * HTTP/1.1-needs-gRPC-Web rule, the deadline from grpc-timeout and the
 * route. Sits above stream.c: the client sides call it, it calls the
 * stream. */
#ifndef GRELAY_REQUEST_H
#define GRELAY_REQUEST_H

#include "grelay/stream.h"

/* A request header field, or a trailer once the headers are done. GR_OK,
 * or GR_ERR_NOMEM. */
int request_on_header(struct stream *s, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* The request's header block is complete: route and start the call, or
 * answer it. */
void request_on_headers_done(struct stream *s);

#endif
