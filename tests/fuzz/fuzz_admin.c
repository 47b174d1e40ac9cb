/* Fuzz target: the admin endpoint's HTTP/1.1 server (src/admin.c, included
 * to reach its connection). The input is written, in pieces sized by its
 * first byte, to one end of a socketpair whose other end is an admin
 * connection; then that side is shut. Whatever the bytes, every answer
 * must be a well-formed response whose Content-Length matches its body,
 * and the connection must end once the input does. */
#include "../../src/admin.c"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An endpoint that echoes what it got: the query, and the body's length. */
static void echo(void *ctx, const char *query, const char *body, struct gr_sbuf *out, struct admin_reply *reply)
{
    sbuf_printf(out, "%s|%zu", query, strlen(body));
    if (query[0] == 'x')
        reply->status = 503;
}

/* Checks that out[0, len) is a run of responses, each with its whole body. */
static void check_answers(const char *out, size_t len)
{
    size_t off = 0;
    while (off < len) {
        if (len - off < 9 || memcmp(out + off, "HTTP/1.1 ", 9) != 0)
            abort();
        const char *head = out + off;
        const char *end = memmem(head, len - off, "\r\n\r\n", 4);
        const char *cl = memmem(head, len - off, "Content-Length: ", 16);
        if (end == NULL || cl == NULL || cl > end)
            abort();
        size_t body = strtoul(cl + 16, NULL, 10);
        size_t next = (size_t)(end + 4 - out) + body;
        if (next > len)
            abort();
        off = next;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ev_loop *loop;
    static char out[1 << 20];
    if (size < 1 || size > 3 * ADMIN_MAX_REQUEST)
        return 0;
    if (loop == NULL)
        loop = ev_loop_new(EVFLAG_AUTO);
    size_t piece = (size_t)data[0] * 64 + 1;
    struct admin a = {.loop = loop, .fd = -1, .allow_mutations = data[0] & 1};
    data++;
    size--;
    gr_list_init(&a.conns);
    admin_route(&a, "GET", "/ready", echo, NULL);
    admin_route(&a, "POST", "/reload", echo, NULL);
    admin_route(&a, "GET", "/", echo, NULL);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    if (!conn_new(&a, sv[0]))
        abort();
    size_t off = 0, got = 0;
    bool shut = false;
    for (int i = 0; i < 100000 && !gr_list_empty(&a.conns); i++) {
        if (off < size) {
            ssize_t n = write(sv[1], data + off, size - off < piece ? size - off : piece);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                off = size; /* grelay closed: the rest goes nowhere */
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        ev_run(loop, EVRUN_NOWAIT);
        ssize_t n;
        while (got < sizeof(out) && (n = read(sv[1], out + got, sizeof(out) - got)) > 0)
            got += (size_t)n;
    }
    if (!gr_list_empty(&a.conns))
        abort(); /* the input ended, so must the connection */
    check_answers(out, got);
    close(sv[1]);
    return 0;
}
