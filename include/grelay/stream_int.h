/* The stream module's insides, shared by its files and by nothing else:
 * stream.c (the state machine, attempts, the flow of bytes), stream_up.c
 * (the events of the upstream stream) and stream_obs.c. Private: no other
 * file includes it. The names keep stream.c's own (they were static there):
 * the module prefix rule is for names other modules see, and none does.
 * Each function is described where stream.c defines it.
 *
 * It does not include grelay/stream.h (that would make an include cycle
 * stream -> stream_int -> stream): grelay/stream.h comes first. */
#ifndef GRELAY_STREAM_INT_H
#define GRELAY_STREAM_INT_H

#ifndef GRELAY_STREAM_H
#error "include grelay/stream.h before grelay/stream_int.h"
#endif

#include "grelay/breaker.h"
#include "grelay/downstream.h"
#include "grelay/retry.h"

static inline struct worker *stream_worker(const struct stream *s) { return s->down->io.w; }
static inline struct stream *stream_of(struct up_slot *sl) { return container_of(sl, struct stream, up); }

/* The events the upstream stream of an attempt reports (stream_up.c). */
extern const struct upstream_events stream_upstream_events;

/* State transitions: the only writers of the response and attempt halves. */
void stream_set_resp(struct stream *s, enum stream_resp to);
void stream_set_att(struct stream *s, enum stream_attempt to);

/* Sends the response headers l (with :status, and content-type if add_ct)
 * to the client, in this call's shape (gRPC-Web, CORS). GR_OK,
 * GR_ERR_NOMEM when they could not be built, or the downstream's error. */
int stream_respond(struct stream *s, const char *status, const struct hdr_list *l, bool add_ct, bool end_stream);
/* l as nghttp2 trailers, with the contract of h2_common_data_result. */
nghttp2_nv *stream_trailers_nv_of(struct stream *s, const struct hdr_list *l, size_t *n);

/* Flow control and what a call holds. */
void stream_credit_back(struct stream *s, struct flow *f, size_t n);
void stream_credit_drop(struct stream *s, struct flow *f, size_t n);
void stream_resume_resp(struct stream *s);
void stream_count_held(struct stream *s);
void stream_write_wait_update(struct stream *s, bool took);
size_t stream_pull_req(struct stream *s, uint8_t *out, size_t len, bool *eof);
/* Without a flat copy (stream_peek_resp's and stream_move_resp's kind). */
size_t stream_peek_req(const struct stream *s, size_t len, bool *eof);
int stream_move_req(struct stream *s, struct buf *out, size_t n);

/* Ending the call, or its attempt. */
void stream_detach_up(struct stream *s, bool reset);
bool stream_abort(struct stream *s);

/* The attempt's held response headers (stream_up.c) are let go of, unsent,
 * with their timer: the attempt ends here or is retried. */
void stream_hold_drop(struct stream *s);

/* Attempts. */
struct arena *stream_att_arena(struct stream *s);
void stream_submit_attempt(struct stream *s, bool from_line);
bool stream_maybe_retry(struct stream *s, enum grpc_status st, enum retry_kind kind, const char *why);
void stream_retry_or_fail(struct stream *s, enum retry_kind kind, enum grpc_status st, const char *msg);

/* The circuit breakers, from a call's side (stream_breaker.c). */
/* Counts s in its cluster's requests (STREAM_BRK_CALL), or ends it at once
 * with UNAVAILABLE past max_requests: then false. */
bool stream_breaker_admit(struct stream *s);
/* A breaker of cluster cl refused s (lim): counted, UNAVAILABLE at once. */
void stream_breaker_refuse(struct stream *s, const struct gr_cluster_cfg *cl, enum breaker_limit lim);
/* A configured retry of s takes a place (STREAM_BRK_RETRY); s's previous
 * retry gives its own back first. BREAKER_OK, or the limit (counted). */
enum breaker_limit stream_breaker_take_retry(struct stream *s);
/* A breaker (lim) refused the configured retry of an attempt that failed
 * with st (why): the call ends as the attempt did, its grpc-message saying
 * no retry followed, naming the limit and the cluster. A trailers-only
 * answer in hand (on_status: retry_on saw its grpc-status; the upstream
 * stream still open) keeps its metadata and gets the note: false, the
 * caller forwards it. Otherwise the call is failed here: true. */
bool stream_breaker_retry_refused(struct stream *s, enum grpc_status st, bool on_status, const char *why,
                                  enum breaker_limit lim);
/* Gives back what s counts in its cluster's breaker (idempotent). */
void stream_breaker_release(struct stream *s);

#endif
