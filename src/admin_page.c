/* The live view's page (admin_page.h). */
#include "grelay/admin_page.h"

#include <string.h>

static const char page[] = "<!doctype html><title>grelay</title><p>live view</p>";

const char *admin_page_html(size_t *len)
{
    *len = strlen(page);
    return page;
}
