/* A whole-proxy fuzz driver, shared by fuzz_h1 and fuzz_h2_session (in the
 * spirit of h2o's fuzz/driver.cc). Once per process it loads a config (one
 * grpc_web listener, routes to one cluster whose only endpoint is a loopback
 * TCP listener the driver owns) and creates a worker whose loop it runs on
 * the fuzzer's thread, ev_run(EVRUN_NOWAIT) a bounded number of turns at a
 * time. Each input is one client connection (a socketpair): the driver
 * writes the client bytes in pieces, reads and discards what grelay answers,
 * and plays the backend with a small nghttp2 server session per upstream
 * connection grelay opens. Then it closes everything, runs the loop until
 * grelay has reaped the connections, and aborts if a call, a connection or
 * a payload chunk is left over.
 *
 * Input layout (missing bytes read as 0):
 *   byte 0-1  failmalloc, little endian. Low 15 bits: N, 0 = never fail.
 *             Bit 15 clear: only the Nth allocation fails (one-shot).
 *             Bit 15 set:   the Nth and every later one fail (sticky).
 *             Counted: malloc, calloc and realloc calls made while grelay
 *             code runs (ev_run and the accept call), by grelay and by
 *             nghttp2 through grelay's allocator (src/mem.c).
 *   byte 2    how the client bytes are cut into pieces (0: one piece), see
 *             piece_len() in driver.c.
 *   byte 3    how the fake backend answers: the low nibble picks the
 *             behaviour for upstream requests 0, 2, 4..., the high nibble for
 *             1, 3, 5... (retries are new requests). 0-3 answer normally,
 *             see enum up_kind in driver.c for the others.
 *   byte 4    flags: bit 1 the backend resets its connections before the
 *             client leaves (then serves new ones); bit 0 then sleep 2 ms once
 *             (lets 1 ms retry backoffs and short grpc-timeouts fire); bit 2
 *             the backend advertises MAX_CONCURRENT_STREAMS 1.
 *   byte 5-   what the client sends. fuzz_h2_session: the driver sends the
 *             HTTP/2 connection preface first, these bytes follow it.
 *
 * Environment: GRELAY_FUZZ_STATS=1 prints totals at exit (upstream requests
 * seen and answered, allocations failed); =2 also one line per input; =3
 * also what is still open when the client is about to leave.
 * GRELAY_FUZZ_DEBUG=1 turns grelay's debug log on. GRELAY_FUZZ_FM_STACK=1
 * prints the stack of the first allocation made to fail in each input. */
#ifndef GRELAY_FUZZ_DRIVER_H
#define GRELAY_FUZZ_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fuzz_front {
    FUZZ_FRONT_H1, /* HTTP/1.1 (gRPC-Web): the socket goes to h1_server_accept */
    FUZZ_FRONT_H2, /* h2c prior knowledge: the socket goes to the sniffer, preface first */
};

/* Runs one input. Always returns 0; aborts on a broken invariant. */
int fuzz_drive(enum fuzz_front front, const uint8_t *data, size_t size);

/* ---- driver_grelay.c: the only code that calls grelay's internals ---- */

struct ev_loop;

/* What the worker holds; all zero between inputs. */
struct gp_census {
    size_t streams;          /* calls in flight */
    size_t downstream_conns; /* client connections, HTTP/1.1 or HTTP/2 */
    size_t sniffing;         /* client connections whose protocol is not chosen yet */
    size_t upstream_conns;   /* upstream connections, open or connecting */
    size_t waiting;          /* calls waiting for an upstream stream slot */
    size_t dirty;            /* connections with a flush due */
    size_t reap;             /* closed connections not yet freed */
    size_t chunks_out;       /* payload chunks handed out and not returned */
};

/* Loads the config and creates the worker (its thread is not started).
 * Returns 0, or -1 with a message in err. */
int gp_start(const char *yaml, bool debug_log, char *err, size_t errlen);
/* The worker's loop. */
struct ev_loop *gp_loop(void);
/* Hands an accepted, non-blocking socket to the front end. */
void gp_accept(enum fuzz_front front, int fd);
void gp_census(struct gp_census *c);
/* Empties the worker's caches (freed streams, chunks, nghttp2 blocks, the
 * connection slab) so that every input starts from the same state and
 * allocates in the same order: failmalloc inputs then reproduce. Only
 * between inputs, when gp_census is all zero. */
void gp_trim(void);

#endif
