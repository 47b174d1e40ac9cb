/* The gRPC-Web codec, attached to a stream: content types, streaming base64
 * for -text mode, request frame checks, and the trailer frame that carries
 * the status in the response body; and the call's body glue in both
 * directions (grpcweb_request, grpcweb_pull). Lives in the stream's arena. */
#ifndef GRELAY_GRPCWEB_H
#define GRELAY_GRPCWEB_H

#include "grelay/arena.h"
#include "grelay/buf.h"
#include "grelay/headers.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct grpcweb {
    bool text;                 /* application/grpc-web-text: base64 both ways */
    const char *content_type;  /* what the client sent; the response says it back */
    const char *upstream_type; /* application/grpc[+proto|+json] */
    uint8_t quad[4];           /* request: a base64 quantum split across reads */
    uint8_t quad_n;            /* bytes of quad[] held */
    uint8_t fhdr[5];           /* request: a gRPC frame header split across reads */
    uint8_t fhdr_n;            /* bytes of fhdr[] held */
    uint64_t fskip;            /* request: payload bytes left in the current frame */
    uint64_t req_bytes;        /* request: decoded body bytes seen (against the listener's limit) */
    uint8_t *trailer;          /* response: the final 0x80 frame, raw (arena) */
    size_t trailer_len;        /* its length */
    size_t trailer_off;        /* bytes of it already emitted */
    bool trailer_built;        /* trailer is final (built, or given up for want of memory) */
    uint8_t enc[4];            /* response: base64 output not yet emitted (tiny pulls) */
    uint8_t enc_n;             /* bytes of enc[] held */
    uint8_t enc_off;           /* bytes of enc[] already emitted */
};

/* If value is a gRPC-Web content type, fills w's type fields and returns
 * true: application/grpc-web[-text][+proto|+json|+other], parameters ignored. */
bool grpcweb_detect(struct grpcweb *w, struct arena *a, const uint8_t *value, size_t len);
/* Decodes base64 that may be split anywhere, with padding allowed between
 * segments. out needs len / 4 * 3 + 3 bytes. Returns 0 or GR_ERR_PROTO. */
int grpcweb_decode(struct grpcweb *w, const uint8_t *in, size_t len, uint8_t *out, size_t *out_len);
/* Standard base64 with padding; out needs (len + 2) / 3 * 4 bytes. */
size_t grpcweb_base64(const uint8_t *in, size_t len, uint8_t *out);
/* Follows the request's gRPC frames: GR_ERR_LIMIT if one declares more than
 * max bytes, GR_ERR_PROTO on a flag byte other than 0 or 1. */
int grpcweb_check_frames(struct grpcweb *w, const uint8_t *data, size_t len, uint64_t max);
/* The grpc-message of a call failed because the upstream sent a field that
 * cannot be written in HTTP/1.1 (see grpcweb_field_ok). */
#define GRPCWEB_INVALID_VALUE "upstream sent an invalid header value"
/* Whether a field may be written as an HTTP/1.1 "name: value" line: a
 * non-empty name of RFC 9110 token bytes, and a value without CR, LF or
 * NUL (review F16: grelay checks this itself, not only through nghttp2). */
bool grpcweb_field_ok(const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* Builds the trailer frame: 0x80, 32-bit length, "name: value\r\n" lines.
 * If a trailer fails grpcweb_field_ok the frame says grpc-status 13,
 * grpc-message GRPCWEB_INVALID_VALUE instead (a status is never half
 * dropped). */
int grpcweb_build_trailer(struct grpcweb *w, struct arena *a, const struct hdr_list *trailers);

/* Request body glue. Takes len bytes of body as they came on the wire:
 * decodes them (-text, in slices through scratch, scratch_len >= 4),
 * checks the gRPC frames and the size limit max, and hands each decoded
 * slice to emit with the wire bytes that brought it. Returns GR_OK;
 * GR_ERR_PROTO (bad base64 or frame; *why says which), GR_ERR_LIMIT (over
 * max), or emit's own error. *wire_done: wire bytes whose slices were
 * emitted (the rest were not). */
int grpcweb_request(struct grpcweb *w, const uint8_t *data, size_t len, uint64_t max, uint8_t *scratch,
                    size_t scratch_len, int (*emit)(void *ctx, const uint8_t *p, size_t n, size_t wire), void *ctx,
                    size_t *wire_done, const char **why);

/* Response body glue: up to len bytes for the client into out: body from
 * q (drained; *taken says how many), then the trailer frame built from
 * trailers once ended and q is empty; base64 in -text mode, each pull
 * padded on its own (clients decode quantum by quantum). *eof once all of
 * it is out. */
size_t grpcweb_pull(struct grpcweb *w, struct buf *q, struct chunk_pool *cp, bool ended,
                    const struct hdr_list *trailers, struct arena *a, uint8_t *out, size_t len, size_t *taken,
                    bool *eof);

#endif
