/* Fuzz target: the HTTP/1.1 front end (gRPC-Web). The input (after the
 * driver's 5 header bytes, see driver.h) is what a client sends on one
 * connection; calls go through the router, pool and upstream HTTP/2 client
 * to the driver's fake backend. */
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_drive(FUZZ_FRONT_H1, data, size); }
