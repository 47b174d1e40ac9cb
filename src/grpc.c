/* gRPC status vocabulary. */
#include "grelay/grpc.h"

#include "grelay/common.h"

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The one table of status names (gRPC's own spelling), indexed by status. */
static const char *const status_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *grpc_status_name(enum grpc_status s)
{
    return (unsigned)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "UNKNOWN";
}

/* Whether written spells canonical: ASCII case ignored, '-' taken for '_'. */
static bool same_name(const char *written, const char *canonical)
{
    for (;; written++, canonical++) {
        char ch = *written;
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        else if (ch == '-')
            ch = '_';
        if (ch != *canonical)
            return false;
        if (ch == '\0')
            return true;
    }
}

int grpc_status_from_name(const char *name, enum grpc_status *out)
{
    for (size_t i = 0; i < GR_ARRAY_LEN(status_names); i++) {
        if (same_name(name, status_names[i])) {
            *out = (enum grpc_status)i;
            return GR_OK;
        }
    }
    return GR_ERR_CONFIG;
}

enum grpc_status grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400: return GRPC_INTERNAL;
    case 401: return GRPC_UNAUTHENTICATED;
    case 403: return GRPC_PERMISSION_DENIED;
    case 404: return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504: return GRPC_UNAVAILABLE;
    default: return GRPC_UNKNOWN;
    }
}

enum grpc_status grpc_status_from_h2_error(uint32_t error_code)
{
    switch (error_code) {
    case NGHTTP2_NO_ERROR:
    case NGHTTP2_REFUSED_STREAM: return GRPC_UNAVAILABLE;
    case NGHTTP2_CANCEL: return GRPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM: return GRPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY: return GRPC_PERMISSION_DENIED;
    default: return GRPC_INTERNAL;
    }
}

char *grpc_message_encode(struct arena *a, const char *msg, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(msg), n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        n += (ch < 0x20 || ch > 0x7e || ch == '%') ? 3 : 1;
    }
    char *out = arena_alloc(a, n + 1);
    if (out == NULL)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch < 0x20 || ch > 0x7e || ch == '%') {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        } else {
            *p++ = (char)ch;
        }
    }
    *p = '\0';
    *out_len = n;
    return out;
}

int grpc_timeout_parse(const uint8_t *v, size_t len, uint64_t *out_us)
{
    if (len < 2 || len > 9)
        return GR_ERR_PROTO;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return GR_ERR_PROTO;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': *out_us = n * 3600000000ull; break;
    case 'M': *out_us = n * 60000000ull; break;
    case 'S': *out_us = n * 1000000ull; break;
    case 'm': *out_us = n * 1000ull; break;
    case 'u': *out_us = n; break;
    case 'n': *out_us = (n + 999) / 1000; break;
    default: return GR_ERR_PROTO;
    }
    return GR_OK;
}

size_t grpc_timeout_format(uint64_t us, char *out)
{
    static const struct {
        uint64_t us;
        char unit;
    } units[] = {{3600000000ull, 'H'}, {60000000ull, 'M'}, {1000000ull, 'S'}, {1000ull, 'm'}, {1ull, 'u'}};
    const uint64_t max = 99999999ull;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (us % units[i].us == 0 && us / units[i].us <= max)
            return (size_t)snprintf(out, 16, "%llu%c", (unsigned long long)(us / units[i].us), units[i].unit);
    }
    /* Too many digits to be exact: the finest unit that fits, rounded down
     * (never promise the next hop more time than there is). */
    for (size_t i = sizeof(units) / sizeof(units[0]); i-- > 0;) {
        if (us / units[i].us <= max)
            return (size_t)snprintf(out, 16, "%llu%c", (unsigned long long)(us / units[i].us), units[i].unit);
    }
    return (size_t)snprintf(out, 16, "%lluH", (unsigned long long)max);
}

int grpc_status_trailers(struct arena *a, struct hdr_list *l, enum grpc_status st, const char *msg)
{
    char code[8];
    int n = snprintf(code, sizeof(code), "%d", (int)st);
    size_t mlen = 0;
    char *enc = grpc_message_encode(a, msg, &mlen);
    if (enc == NULL)
        return GR_ERR_NOMEM;
    headers_init(l);
    int rc = headers_add(l, a, (const uint8_t *)"grpc-status", 11, (const uint8_t *)code, (size_t)n);
    if (rc == GR_OK)
        rc = headers_add(l, a, (const uint8_t *)"grpc-message", 12, (const uint8_t *)enc, mlen);
    return rc;
}

int grpc_status_value(const uint8_t *v, size_t len)
{
    int code = 0;
    for (size_t i = 0; i < len && i < 3; i++)
        code = code * 10 + (v[i] - '0');
    return code;
}

bool grpc_response_ok(int http_status, const struct gr_hdr *ct, enum grpc_status *st, char *msg, size_t msglen)
{
    bool grpc_ct = ct != NULL && ct->valuelen >= 16 && memcmp(ct->value, "application/grpc", 16) == 0;
    if (http_status == 200 && grpc_ct)
        return true;
    snprintf(msg, msglen, "upstream answered HTTP %d (%.60s), not gRPC", http_status,
             ct ? (const char *)ct->value : "no content-type");
    *st = http_status != 200 ? grpc_status_from_http(http_status) : GRPC_UNKNOWN;
    return false;
}

void grpc_http_status_text(int http_status, char out[4])
{
    int v = http_status % 1000;
    out[0] = (char)('0' + v / 100);
    out[1] = (char)('0' + v / 10 % 10);
    out[2] = (char)('0' + v % 10);
    out[3] = '\0';
}
