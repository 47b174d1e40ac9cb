/* The HTTP/2 frame-boundary tracker (hibernation decides with it whether a
 * connection stands between frames). Input: a byte stream that follows the
 * 24-byte preface, cut into pieces at the positions the first bytes choose.
 * However it is cut, the tracker must end in the same state as when fed the
 * stream whole, and agree with a plain walk over the frames. */
#include "grelay/h2_common.h"
#include "grelay/h2_hibernate.h"

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

/* The walk: returns whether the stream ends at a boundary outside a block. */
static bool walk(const uint8_t *p, size_t n)
{
    size_t off = 0;
    bool in_block = false;
    while (off < n) {
        if (n - off < 9)
            return false;
        uint32_t len = ((uint32_t)p[off] << 16) | ((uint32_t)p[off + 1] << 8) | p[off + 2];
        uint8_t type = p[off + 3], flags = p[off + 4];
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE || type == NGHTTP2_CONTINUATION)
            in_block = !(flags & NGHTTP2_FLAG_END_HEADERS);
        if (n - off - 9 < len)
            return false;
        off += 9 + len;
    }
    return !in_block;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t step = data[0] ? data[0] : 1, phase = data[1];
    const uint8_t *body = data + 2;
    size_t n = size - 2;
    uint8_t *stream = malloc(24 + n);
    if (stream == NULL)
        return 0;
    memcpy(stream, PREFACE, 24);
    memcpy(stream + 24, body, n);

    struct h2_frames whole, cut;
    h2_common_frames_init(&whole);
    h2_common_frames_feed(&whole, stream, 24 + n, NULL, NULL);
    h2_common_frames_init(&cut);
    size_t off = 0, piece = (size_t)phase % 37;
    while (off < 24 + n) {
        size_t k = piece == 0 ? 1 : piece; /* pieces of 1 to 96 bytes */
        if (k > 24 + n - off)
            k = 24 + n - off;
        h2_common_frames_feed(&cut, stream + off, k, NULL, NULL);
        off += k;
        piece = (piece * 7 + step) % 97;
    }
    if (memcmp(&whole, &cut, sizeof(whole)) != 0)
        abort();
    if (h2_common_frames_at_boundary(&whole) != walk(body, n))
        abort();
    free(stream);
    return 0;
}
