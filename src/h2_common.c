/* Options both nghttp2 sessions share (see include/grelay/h2_common.h). */
#include "grelay/h2_common.h"
#include "grelay/common.h"

int h2_common_options(nghttp2_option **opt)
{
    if (nghttp2_option_new(opt) != 0) {
        *opt = NULL;
        return GR_ERR_NOMEM;
    }
    nghttp2_option_set_no_auto_window_update(*opt, 1);
    nghttp2_option_set_no_closed_streams(*opt, 1); /* we keep no priority tree: do not hold closed streams */
    return GR_OK;
}

void h2_common_free(nghttp2_session_callbacks *cbs, nghttp2_option *opt)
{
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (opt != NULL)
        nghttp2_option_del(opt);
}
