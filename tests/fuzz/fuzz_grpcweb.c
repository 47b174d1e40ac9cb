/* Fuzz target: the gRPC-Web codec. The first byte picks a split point; the
 * rest is fed to the streaming base64 decoder in two pieces, which must
 * agree with decoding it in one piece, and whose output (and the raw input)
 * goes through the request frame checker. Encoding then decoding any input
 * gives it back. */
#include "grelay/grpcweb.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    size_t cut = data[0] % size;
    data++;
    size--;
    if (cut > size)
        cut = size;
    static uint8_t one[4096], two[4096], enc[8192], back[8192];
    struct grpcweb a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    size_t n1 = 0, n2a = 0, n2b = 0;
    int r1 = grpcweb_decode(&a, data, size, one, &n1);
    int r2 = grpcweb_decode(&b, data, cut, two, &n2a);
    if (r2 == 0)
        r2 = grpcweb_decode(&b, data + cut, size - cut, two + n2a, &n2b);
    if ((r1 == 0) != (r2 == 0))
        abort();
    if (r1 == 0 && (n1 != n2a + n2b || memcmp(one, two, n1) != 0 || a.quad_n != b.quad_n))
        abort();
    struct grpcweb f;
    memset(&f, 0, sizeof(f));
    grpcweb_check_frames(&f, data, size, 1u << 20);
    if (r1 == 0)
        grpcweb_check_frames(&f, one, n1, 1u << 20);
    size_t e = grpcweb_base64(data, size, enc);
    if (e % 4 != 0)
        abort();
    struct grpcweb d;
    memset(&d, 0, sizeof(d));
    size_t nb;
    if (grpcweb_decode(&d, enc, e, back, &nb) != 0 || nb != size || memcmp(back, data, size) != 0)
        abort();
    return 0;
}
