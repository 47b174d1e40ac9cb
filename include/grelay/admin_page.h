/* The live view: one self-contained page (no external scripts, styles or
 * fonts) served at GET / on the admin port; it polls /stats.json every
 * second. Its source is src/admin_page.html, embedded at build time. */
#ifndef GRELAY_ADMIN_PAGE_H
#define GRELAY_ADMIN_PAGE_H

#include <stddef.h>

/* The page's bytes (static), and their length in *len. */
const char *admin_page_html(size_t *len);

#endif
