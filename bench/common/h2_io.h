/* Socket I/O of an nghttp2 session, shared by the benchmark's backend and
 * bidi load generator.
 *
 * h2_gather gathers what the session has to send into one buffer, so that a
 * benchmark peer makes one send() per wake-up, as a real gRPC server's or
 * client's buffered writer does (grpc-go flushes once per batch). Sending
 * each frame on its own costs a packet per frame, and on loopback the
 * kernel work of those packets then dominates every proxy's CPU time.
 *
 * h2_gather fills buf (cap bytes) and returns how many bytes it holds, or
 * -1 on a session error. When the next chunk does not fit, it stops and
 * leaves that chunk in *spill / *spill_len (valid until the next
 * nghttp2_session_mem_send); otherwise *spill_len is 0. */
#ifndef BENCH_H2_IO_H
#define BENCH_H2_IO_H

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

static inline ssize_t h2_gather(nghttp2_session *h2, uint8_t *buf, size_t cap, const uint8_t **spill, size_t *spill_len)
{
    size_t len = 0;
    *spill_len = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h2, &p);
        if (n < 0)
            return -1;
        if (n == 0)
            return (ssize_t)len;
        if (len + (size_t)n > cap) {
            *spill = p;
            *spill_len = (size_t)n;
            return (ssize_t)len;
        }
        memcpy(buf + len, p, (size_t)n);
        len += (size_t)n;
    }
}

/* Reads what the socket has (one recv) into the session. Returns 1 when
 * bytes were fed, 0 when there was nothing to read, -1 when the peer closed,
 * the socket failed or the session rejected the bytes. */
static inline int h2_feed(nghttp2_session *h2, int fd)
{
    uint8_t buf[65536];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EAGAIN)
        return 0;
    if (n <= 0 || nghttp2_session_mem_recv(h2, buf, (size_t)n) < 0)
        return -1;
    return 1;
}

#endif
