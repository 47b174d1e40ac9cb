/* The gRPC-Web codec, attached to a stream: content types, streaming base64
 * for -text mode, request frame checks, and the trailer frame that carries
 * the status in the response body. Lives in the stream's arena. */
#ifndef GRELAY_GRPCWEB_H
#define GRELAY_GRPCWEB_H

#include "grelay/arena.h"
#include "grelay/headers.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct grpcweb {
    bool text;                   /* application/grpc-web-text: base64 both ways */
    const char *content_type;    /* what the client sent; the response says it back */
    const char *upstream_type;   /* application/grpc[+proto|+json] */
    uint8_t quad[4];             /* request: a base64 quantum split across reads */
    uint8_t quad_n;
    uint8_t fhdr[5];             /* request: a gRPC frame header split across reads */
    uint8_t fhdr_n;
    uint64_t fskip;              /* request: payload bytes left in the current frame */
    uint8_t *trailer;            /* response: the final 0x80 frame, raw */
    size_t trailer_len;
    size_t trailer_off;          /* bytes of it already emitted */
    bool trailer_built;
    uint8_t enc[4];              /* response: base64 output not yet emitted (tiny pulls) */
    uint8_t enc_n;
    uint8_t enc_off;
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
/* Builds the trailer frame: 0x80, 32-bit length, "name: value\r\n" lines. */
int grpcweb_build_trailer(struct grpcweb *w, struct arena *a, const struct hdr_list *trailers);

#endif
