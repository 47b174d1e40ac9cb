#!/usr/bin/python3
"""What the demo page's gRPC-Web call looks like on the wire: an HTTP/1.1
POST with a base64 body, a CORS Origin, and the status in a trailer frame at
the end of the body. Prints each step.

Usage: web_client.py [HOST:PORT] [NAME]
"""
import base64
import http.client
import struct
import sys

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
name = (sys.argv[2] if len(sys.argv) > 2 else "web newcomer").encode()
host, port = target.rsplit(":", 1)

conn = http.client.HTTPConnection(host, int(port), timeout=10)
body = base64.b64encode(b"\x00" + struct.pack(">I", len(name)) + name)
conn.request("POST", "/demo.Greeter/SayHello", body, {
    "content-type": "application/grpc-web-text", "x-grpc-web": "1", "origin": "http://localhost:3000"})
resp = conn.getresponse()
raw = resp.read()
print("HTTP/1.1 %d, content-type %s, access-control-allow-origin %s" % (
    resp.status, resp.getheader("content-type"), resp.getheader("access-control-allow-origin")))
data = b"".join(base64.b64decode(raw[i:i + 4]) for i in range(0, len(raw) - len(raw) % 4, 4))
i = 0
while i + 5 <= len(data):
    flag, n = data[i], struct.unpack(">I", data[i + 1:i + 5])[0]
    payload = data[i + 5:i + 5 + n]
    if flag & 0x80:
        print("trailer frame: " + payload.decode().strip().replace("\r\n", "; "))
    else:
        print("message: " + payload.decode())
    i += 5 + n
