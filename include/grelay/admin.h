/* The admin endpoint: a small HTTP/1.1 server on the main thread's loop,
 * never on a worker's (DESIGN.md). GET endpoints read; POST endpoints
 * change something and answer 403 unless admin.allow_mutations is true.
 * docs/observability.md lists them. */
#ifndef GRELAY_ADMIN_H
#define GRELAY_ADMIN_H

#include "grelay/config_types.h"
#include "grelay/sbuf.h"

#include <ev.h>
#include <stdbool.h>

struct admin;

/* What one request gets: a status line's code and text, a content type
 * and a body the handler wrote into out. */
struct admin_reply {
    int status;               /* 200, 403, 404, 503, ... */
    const char *content_type; /* "text/plain; version=0.0.4", "application/json", ... */
};

/* A handler: query is what follows '?' (or ""), body the request body
 * (POST). Writes the body into out and fills reply. Main thread. */
typedef void (*admin_handler)(void *ctx, const char *query, const char *body, struct gr_sbuf *out,
                              struct admin_reply *reply);

/* Listens on cfg->address on loop. Returns NULL with a message in err when
 * the socket cannot be bound. */
struct admin *admin_new(struct ev_loop *loop, const struct gr_admin_cfg *cfg, char *err, size_t errlen);
/* Adds an endpoint: method "GET" or "POST", path exact ("/metrics").
 * POST endpoints answer 403 while mutations are not allowed. */
void admin_route(struct admin *a, const char *method, const char *path, admin_handler fn, void *ctx);
/* A reload changed allow_mutations (the address stays until a restart). */
void admin_set_mutations(struct admin *a, bool allow);
/* The listening socket, for a binary upgrade to hand over under the
 * name ADMIN_UPGRADE_NAME (and its address, which no listener shares); admin_new
 * takes the one handed over before binding a new one. */
#define ADMIN_UPGRADE_NAME "@admin"
int admin_fd(const struct admin *a);
/* Closes the socket and every admin connection. */
void admin_free(struct admin *a);

#endif
