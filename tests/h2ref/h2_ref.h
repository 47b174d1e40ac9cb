/* The reference for grelay's request checks (include/grelay/h2_check.h):
 * a request written as real HTTP/2 frames and sent to an nghttp2 server
 * session with HTTP messaging on, whose verdict grelay's h2_check_req must
 * give too. Shared by tests/unit/test_h2_check_req.c (cases) and
 * tests/fuzz/fuzz_h2_check_req.c (random requests). */
#ifndef GRELAY_TESTS_H2_REF_H
#define GRELAY_TESTS_H2_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H2_REF_MAX_FIELDS 16
#define H2_REF_MAX_DATA 4
#define H2_REF_MAX_NAME 32
#define H2_REF_MAX_VALUE 40

struct h2_ref_field {
    uint8_t name[H2_REF_MAX_NAME];
    size_t namelen;
    uint8_t value[H2_REF_MAX_VALUE];
    size_t valuelen;
};

/* One request: its head, DATA frames, trailers, and where END_STREAM is. */
struct h2_ref_req {
    struct h2_ref_field head[H2_REF_MAX_FIELDS];
    size_t n_head;
    size_t data[H2_REF_MAX_DATA]; /* payload lengths of the DATA frames (each at most 16,384) */
    size_t n_data;
    struct h2_ref_field trailers[H2_REF_MAX_FIELDS];
    size_t n_trailers;
    bool trailers_end; /* the trailers carry END_STREAM (else, when there are none, the last frame does) */
    bool open;         /* no trailers and no END_STREAM at all: the body has not ended */
    const char *what;  /* the case, for a failure's message */
};

/* nghttp2's verdict. */
enum h2_ref_verdict {
    H2_REF_TAKES,       /* the request went through */
    H2_REF_RESETS,      /* RST_STREAM PROTOCOL_ERROR */
    H2_REF_OTHER_RESET, /* another reset code: not an HTTP messaging verdict */
    H2_REF_CONN_ERROR,  /* a connection error: not a stream-level case */
};

enum h2_ref_verdict h2_ref_nghttp2(const struct h2_ref_req *r);
/* grelay's verdict, fed as h2_server.c feeds h2_check_req: true when it
 * resets the stream. */
bool h2_ref_grelay_rejects(const struct h2_ref_req *r);

#endif
