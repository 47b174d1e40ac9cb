/* GET /clusters (clusters_view.h). */
#include "grelay/clusters_view.h"
#include "grelay/proxy.h"

void clusters_view_json(struct proxy *p, struct gr_sbuf *out)
{
    (void)p;
    sbuf_puts(out, "{\"clusters\":[]}");
}
