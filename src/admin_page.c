/* The live view's page (admin_page.h): src/admin_page.html, whose bytes
 * cmake/embed.cmake writes into a generated C file at build time. */
#include "grelay/admin_page.h"

/* The page's bytes, followed by a NUL that admin_page_bytes_size does not
 * count (generated: build tree, admin_page_data.c). */
extern const unsigned char admin_page_bytes[];
extern const size_t admin_page_bytes_size;

const char *admin_page_html(size_t *len)
{
    *len = admin_page_bytes_size;
    return (const char *)admin_page_bytes;
}
