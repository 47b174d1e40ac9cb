/* Fuzz target: grpc-timeout parsing accepts exactly the grammar, and what we
 * format for the next hop parses back to no more than the time we had. */
#include "grelay/grpc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t us;
    int rc = grpc_timeout_parse(data, size, &us);
    bool grammar = size >= 2 && size <= 9 && strchr("HMSmun", data[size - 1]) != NULL && data[size - 1] != 0;
    for (size_t i = 0; grammar && i + 1 < size; i++)
        grammar = data[i] >= '0' && data[i] <= '9';
    if ((rc == 0) != grammar)
        abort();
    if (rc == 0) {
        char out[16];
        size_t n = grpc_timeout_format(us, out);
        uint64_t back;
        if (n < 2 || n > 9 || grpc_timeout_parse((const uint8_t *)out, n, &back) != 0 || back > us)
            abort();
        if (us <= 99999999ull && back != us)
            abort(); /* exact below 100 s */
    }
    return 0;
}
