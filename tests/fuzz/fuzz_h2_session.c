/* Fuzz target: a whole downstream HTTP/2 server session. The driver sends
 * the connection preface; the input (after its 5 header bytes, see
 * driver.h) is what the client sends after it. Streams run through the call
 * code (stream.c, router, pool, upstream HTTP/2 client) to the driver's
 * fake backend. */
#include "driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_drive(FUZZ_FRONT_H2, data, size); }
