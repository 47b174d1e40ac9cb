/* gRPC vocabulary: status codes, the HTTP-to-status table, grpc-message encoding. */
#ifndef GRELAY_GRPC_H
#define GRELAY_GRPC_H

#include "grelay/arena.h"
#include "grelay/headers.h"

#include <stddef.h>
#include <stdint.h>

/* A status we send to a client; not an error code of ours. */
enum grpc_status {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* The status's name as gRPC spells it ("UNAVAILABLE"); "UNKNOWN" for a
 * value that is not a status. */
const char *grpc_status_name(enum grpc_status s);
/* The status a name stands for: grpc_status_name's spelling in any ASCII
 * case, with '-' or '_' between words ("UNAVAILABLE", "unavailable",
 * "deadline-exceeded", "Resource_Exhausted"). Writes it to out and returns
 * 0, or returns GR_ERR_CONFIG for anything else. "OK" is a name too:
 * callers that cannot use it (retry_on) refuse it themselves. */
int grpc_status_from_name(const char *name, enum grpc_status *out);
/* The status for a non-gRPC HTTP answer, per gRPC's http-grpc-status-mapping. */
enum grpc_status grpc_status_from_http(int http_status);
/* The status for a stream an upstream peer reset with this HTTP/2 error code. */
enum grpc_status grpc_status_from_h2_error(uint32_t error_code);
/* Percent-encodes msg for grpc-message (bytes outside 0x20..0x7e, and '%').
 * Returns the encoded string in the arena, or NULL when out of memory. */
char *grpc_message_encode(struct arena *a, const char *msg, size_t *out_len);

/* Replaces l with the trailers of a status: grpc-status and the encoded
 * grpc-message (arena memory). GR_OK or GR_ERR_NOMEM. */
int grpc_status_trailers(struct arena *a, struct hdr_list *l, enum grpc_status st, const char *msg);
/* The value of a grpc-status (or :status) field, 0..999 (digits past the third are
 * ignored; not a number: 0). */
int grpc_status_value(const uint8_t *v, size_t len);
/* Whether a final response that carries no grpc-status is a gRPC one:
 * HTTP 200 with an application/grpc content-type (ct may be NULL). When
 * it is not, *st is the status gRPC's HTTP table gives it and msg says
 * what the upstream answered. */
bool grpc_response_ok(int http_status, const struct gr_hdr *ct, enum grpc_status *st, char *msg, size_t msglen);
/* An HTTP status (100..999) as three digits and a NUL. */
void grpc_http_status_text(int http_status, char out[4]);

/* Parses a grpc-timeout value: 1 to 8 ASCII digits, then one of H M S m u n.
 * Writes microseconds (nanoseconds round up) and returns 0, or returns
 * GR_ERR_PROTO for anything else. */
int grpc_timeout_parse(const uint8_t *v, size_t len, uint64_t *out_us);
/* Formats microseconds as a grpc-timeout value in the coarsest unit that
 * keeps full precision, or, when the value needs more than 8 digits, the
 * finest unit that fits (rounded down). out needs 16 bytes; returns the
 * length. 0 becomes "0n"... never sent: callers send at least 1u. */
size_t grpc_timeout_format(uint64_t us, char *out);

#endif
