/* Protocol detection on cleartext listeners with grpc_web: the HTTP/2
 * connection preface means h2c (prior knowledge), anything else HTTP/1.1
 * (Envoy's codec_type: AUTO). */
#ifndef GRELAY_SNIFF_H
#define GRELAY_SNIFF_H

#include "grelay/config.h"

struct worker;

void sniff_accept(struct worker *w, const struct gr_listener_cfg *l, int fd);

#endif
