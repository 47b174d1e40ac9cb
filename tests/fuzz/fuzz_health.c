/* Fuzz target: a health check's answer (health_probe_parse) is bounded and
 * says SERVING, NOT_SERVING or SERVICE_UNKNOWN only for a well-framed,
 * uncompressed message; a request encoded from any service name carries
 * that name back out of its frame. */
#include "grelay/health_probe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void request_round_trip(const uint8_t *data, size_t size)
{
    char name[260];
    size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
    memcpy(name, data, n);
    name[n] = '\0';
    n = strlen(name);
    uint8_t req[300];
    size_t len = health_probe_request(name, req, sizeof(req));
    if (len == 0)
        abort(); /* 259 bytes always fit */
    size_t msg = ((size_t)req[1] << 24) | ((size_t)req[2] << 16) | ((size_t)req[3] << 8) | req[4];
    if (req[0] != 0 || msg != len - 5 || (n == 0 && msg != 0))
        abort();
    if (n > 0) {
        size_t at = 6, v = 0;
        uint8_t b;
        int shift = 0;
        do {
            b = req[at++];
            v |= (size_t)(b & 0x7f) << shift;
            shift += 7;
        } while ((b & 0x80) && at < len);
        if (req[5] != 0x0a || v != n || at + n != len || memcmp(req + at, name, n) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum health_result r = health_probe_parse(data, size);
    if (r != HC_SERVING && r != HC_NOT_SERVING && r != HC_SERVICE_UNKNOWN && r != HC_ERROR)
        abort();
    if (r != HC_ERROR) {
        size_t msg = ((size_t)data[1] << 24) | ((size_t)data[2] << 16) | ((size_t)data[3] << 8) | data[4];
        if (size < 5 || data[0] != 0 || msg != size - 5)
            abort();
    }
    request_round_trip(data, size);
    return 0;
}
