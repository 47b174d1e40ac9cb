#!/usr/bin/env python3
"""Self instructions per call by object and by function, from two callgrind
runs of bench/callgrind.sh --keep (N1 and N2 calls): (cost(N2) - cost(N1)) /
(N2 - N1), as the script's total is taken.

    bench/callgrind_split.py OUT.N1 OUT.N2 N1 N2 [--top K]

Objects are grouped as grelay, nghttp2, libc, OpenSSL, libev and the rest
(the kernel is not seen by callgrind). Functions of a library without debug
symbols are named by the nearest exported symbol or by address."""
import re
import sys
from collections import defaultdict


def parse(path):
    """Self cost per (object, function) of one callgrind.out file."""
    names = {"ob": {}, "fn": {}, "cob": {}, "cfn": {}}
    cost = defaultdict(int)
    ob = fn = None
    skip = False  # the cost line after calls= is inclusive cost of the call
    ref = re.compile(r"^(c?ob|c?fn|c?fl|c?fi|c?fe|fi|fe)=\((\d+)\)(?: (.*))?$")
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = ref.match(line)
            if m:
                kind, num, name = m.group(1), m.group(2), m.group(3)
                table = {"cob": "ob", "cfn": "fn"}.get(kind, kind)
                if table in ("ob", "fn"):
                    d = names[table]
                    if name is not None:
                        d[num] = name
                    if kind == "ob":
                        ob = d[num]
                    elif kind == "fn":
                        fn = d[num]
                continue
            if line.startswith("calls="):
                skip = True
                continue
            if not line or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            if skip:
                skip = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                cost[(ob, fn)] += int(parts[1])
    return cost


def group(ob):
    o = ob or "?"
    if "libnghttp2" in o:
        return "nghttp2"
    if "libc.so" in o or "ld-linux" in o or "libm.so" in o:
        return "libc"
    if "libssl" in o or "libcrypto" in o:
        return "OpenSSL"
    if "libev" in o:
        return "libev"
    if o.endswith("/grelay"):
        return "grelay"
    return o.rsplit("/", 1)[-1]


def main():
    args = sys.argv[1:]
    top = 40
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i:i + 2]
    a, b, n1, n2 = parse(args[0]), parse(args[1]), int(args[2]), int(args[3])
    per = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    groups = defaultdict(float)
    for (ob, _), v in per.items():
        groups[group(ob)] += v
    total = sum(per.values())
    print(f"total {total:,.0f} instructions per call")
    for g, v in sorted(groups.items(), key=lambda x: -x[1]):
        if abs(v) >= 1:
            print(f"  {g:<12} {v:8,.0f}  {100 * v / total:5.1f}%")
    print(f"top {top} functions (self):")
    for (ob, fn), v in sorted(per.items(), key=lambda x: -x[1])[:top]:
        print(f"  {v:8,.0f}  {100 * v / total:5.1f}%  {group(ob):<8} {fn}")


if __name__ == "__main__":
    main()
