/* Outlier ejection of a pool's endpoint from its calls' outcomes
 * (outlier_detection; the arithmetic is outlier.h). Apart from pool.c,
 * which it drives through pool_set_ejected_until, because it looks at the
 * other endpoints of the cluster (max_ejection_percent), as wcluster.h
 * holds them. On the pool's worker; no lock. */
#ifndef GRELAY_POOL_EJECT_H
#define GRELAY_POOL_EJECT_H

struct pool;

/* An attempt on p ended with code (a grpc-status, OUTLIER_RESET or
 * OUTLIER_NOTHING: outlier.h): with the cluster's outlier_detection, it
 * counts toward (or ends) the endpoint's run of failures, and may eject
 * it; the return after the ejection time is a timer of the pool. */
void pool_attempt_result(struct pool *p, int code);

#endif
