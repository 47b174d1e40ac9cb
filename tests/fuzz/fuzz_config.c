/* Fuzz target: the YAML config loader must reject any input cleanly, with a
 * "name:line:col: ..." message, and never crash or leak. */
#include "grelay/config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    err[0] = '\0';
    struct gr_config *cfg = config_load_buffer("fuzz.yaml", (const char *)data, size, err, sizeof(err));
    if (cfg == NULL) {
        if (strncmp(err, "fuzz.yaml:", 10) != 0)
            abort(); /* every failure names the file */
    } else {
        if (cfg->n_listeners == 0)
            abort(); /* a loaded config always has a listener */
        for (size_t i = 0; i < cfg->n_listeners; i++)
            for (size_t v = 0; v < cfg->listeners[i].n_vhosts; v++)
                for (size_t r = 0; r < cfg->listeners[i].vhosts[v].n_routes; r++)
                    if (cfg->listeners[i].vhosts[v].routes[r].cluster == NULL)
                        abort(); /* and every route has its cluster */
        config_free(cfg);
    }
    return 0;
}
