#!/usr/bin/python3
"""The abuse bench's backend: a real gRPC server (grpcio's asyncio server, so
a call blocked on flow control holds no thread).

  /bench.Echo/Unary         echoes the request message
  /bench.Echo/ServerStream  request JSON {"count": N, "size": S}: N messages of
                            S bytes, as fast as flow control lets them go

Usage: backend.py HOST:PORT [MAX_METADATA_SIZE]
MAX_METADATA_SIZE (bytes, default 8192) is grpcio's `grpc.max_metadata_size`,
which it advertises as SETTINGS_MAX_HEADER_LIST_SIZE. Prints "ready" once it
listens.
"""
import asyncio
import json
import sys

import grpc


async def unary(request, context):
    return request


async def server_stream(request, context):
    req = json.loads(request or b"{}")
    chunk = b"x" * int(req.get("size", 1024))
    for _ in range(int(req.get("count", 1))):
        yield chunk


async def main():
    addr = sys.argv[1]
    max_md = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
    ident = lambda b: b
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
    })
    server = grpc.aio.server(options=[("grpc.max_metadata_size", max_md),
                                      ("grpc.max_receive_message_length", 16 << 20),
                                      ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
