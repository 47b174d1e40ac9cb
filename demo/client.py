#!/usr/bin/python3
"""Demo client: calls the Greeter through grelay and shows which backend answered.

Usage: client.py [HOST:PORT] [NAME]
"""
import collections
import sys

import grpc

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
name = sys.argv[2] if len(sys.argv) > 2 else "newcomer"

with grpc.insecure_channel(target) as channel:
    hello = channel.unary_unary("/demo.Greeter/SayHello")
    seen = collections.Counter()
    for i in range(6):
        reply, call = hello.with_call(name.encode(), timeout=5)
        backend = dict(call.initial_metadata()).get("x-backend", "?")
        seen[backend] += 1
        print("unary  %d: %s" % (i + 1, reply.decode()))
    print("one connection, calls spread over: %s" % dict(sorted(seen.items())))
    stream = channel.unary_stream("/demo.Greeter/StreamGreetings")
    for msg in stream(name.encode(), timeout=10):
        print("stream : %s" % msg.decode())
    try:
        channel.unary_unary("/demo.Nowhere/Call")(b"", timeout=5)
    except grpc.RpcError as e:
        print("no route -> %s: %s" % (e.code().name, e.details()))
