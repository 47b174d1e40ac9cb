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
    /* HPACK (docs/limits.md, Header blocks): our encoders keep at most
     * 4 KiB of table whatever SETTINGS_HEADER_TABLE_SIZE a peer offers
     * (nghttp2's default, pinned here); our decoders' tables are bounded by
     * the 4 KiB we advertise (the default, never raised). */
    nghttp2_option_set_max_deflate_dynamic_table_size(*opt, 4096);
    /* Any block we accept must be one we can forward: nghttp2 refuses to
     * send a block whose bound (12 + name + value a field, less than the
     * 32 + name + value we count) passes 64 KiB by default, and the call
     * would hang. Ours: max_request_headers (at most 1 MiB), upstream
     * response headers (256 KiB), plus the few fields grelay adds. */
    nghttp2_option_set_max_send_header_block_length(*opt, H2_MAX_SEND_HEADER_BLOCK);
    return GR_OK;
}

void h2_common_free(nghttp2_session_callbacks *cbs, nghttp2_option *opt)
{
    if (cbs != NULL)
        nghttp2_session_callbacks_del(cbs);
    if (opt != NULL)
        nghttp2_option_del(opt);
}
