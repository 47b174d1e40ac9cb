/* The circuit breakers from a call's side (declared in stream_int.h): what
 * a stream counts in its cluster's breaker (breaker.h), and how a refusal
 * reaches its client. Part of the stream module. */
#include "grelay/stream.h"
#include "grelay/breaker.h"
#include "grelay/downstream.h"
#include "grelay/headers.h"
#include "grelay/stats.h"
#include "grelay/stream_int.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <string.h>

static struct stats_shard *shard_of(const struct stream *s) { return s->down->io.w->stats; }

void stream_breaker_refuse(struct stream *s, const struct gr_cluster_cfg *cl, enum breaker_limit lim)
{
    char msg[200];
    breaker_tripped(shard_of(s), cl, lim, s->id);
    breaker_message(msg, sizeof(msg), cl, lim);
    (void)stream_fail(s, GRPC_UNAVAILABLE, msg);
}

/* Whether cl's calls and retries are counted: only with circuit_breakers
 * or a retry_budget, so that the calls of other clusters touch no counter
 * shared by the workers (DESIGN.md: no shared cache line on the data
 * path). The stream remembers what it took (brk), so a reload that adds or
 * drops a breaker gives back exactly that. */
static bool counted(const struct gr_cluster_cfg *cl) { return cl->circuit_breakers.set || cl->retry_budget.set; }

bool stream_breaker_admit(struct stream *s)
{
    if (!counted(s->route->cluster))
        return true;
    enum breaker_limit lim = breaker_call_begin(s->route->cluster);
    if (lim != BREAKER_OK) {
        stream_breaker_refuse(s, s->route->cluster, lim);
        return false;
    }
    s->brk |= STREAM_BRK_CALL;
    return true;
}

enum breaker_limit stream_breaker_take_retry(struct stream *s)
{
    const struct gr_cluster_cfg *cl = s->route->cluster;
    if (s->brk & STREAM_BRK_RETRY)
        breaker_retry_end(cl);
    s->brk &= (uint8_t)~STREAM_BRK_RETRY;
    if (!counted(cl))
        return BREAKER_OK;
    enum breaker_limit lim = breaker_retry_begin(cl);
    if (lim == BREAKER_OK)
        s->brk |= STREAM_BRK_RETRY;
    else
        breaker_tripped(shard_of(s), cl, lim, s->id);
    return lim;
}

/* Adds "; retry not made: NOTE" to the grpc-message of the upstream's
 * answer in l: a trailers-only answer's headers, or the trailers after
 * held headers (the upstream's text is percent-encoded already; the note is
 * encoded here). Left as it is when out of room or memory. */
static void amend_message(struct stream *s, struct hdr_list *l, const char *note)
{
    char msg[512];
    const struct gr_hdr *gm = headers_find(l, "grpc-message");
    snprintf(msg, sizeof(msg), "%.*s%sretry not made: ", gm ? (int)gm->valuelen : 0, gm ? (const char *)gm->value : "",
             gm ? "; " : "");
    size_t elen, head = strlen(msg);
    char *enc = grpc_message_encode(&s->att_arena, note, &elen);
    if (enc == NULL || head + elen >= sizeof(msg))
        return;
    memcpy(msg + head, enc, elen + 1);
    headers_remove(l, "grpc-message");
    (void)headers_add(l, &s->att_arena, (const uint8_t *)"grpc-message", 12, (const uint8_t *)msg, head + elen);
}

bool stream_breaker_retry_refused(struct stream *s, enum grpc_status st, bool on_status, const char *why,
                                  enum breaker_limit lim)
{
    char note[200], msg[512];
    breaker_message(note, sizeof(note), s->route->cluster, lim);
    /* The upstream answered with a status (trailers-only, or in trailers
     * after held headers): its answer goes out as it came, with the note. */
    struct hdr_list *answer = s->resp_held ? &s->resp_trailers : &s->resp_hdrs;
    if (on_status && s->att != ATT_CLOSED && s->resp_status != 0 && headers_find(answer, "grpc-status") != NULL) {
        amend_message(s, answer, note);
        return false;
    }
    snprintf(msg, sizeof(msg), "%s; retry not made: %s", why, note);
    (void)stream_fail(s, st, msg);
    return true;
}

void stream_breaker_release(struct stream *s)
{
    if (s->brk & STREAM_BRK_RETRY)
        breaker_retry_end(s->route->cluster);
    if (s->brk & STREAM_BRK_CALL)
        breaker_call_end(s->route->cluster);
    s->brk = 0;
}
