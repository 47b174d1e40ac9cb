#!/usr/bin/env python3
"""Checks the shape of the source tree, as the README's Layout promises.

- The module graph has no cycle. A module is src/x.c with include/grelay/x.h;
  module x depends on y when either of its files includes "grelay/y.h".
- No file under src/ or include/ is longer than 1,000 lines.
- No function in src/ is longer than 80 lines (a table is not a function).

Prints what is wrong and exits 1, or prints a summary and exits 0.
Usage: scripts/check-structure.py [--graph]   (--graph prints the modules
in dependency order, each with what it includes)."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 1000
MAX_FUNCTION_LINES = 80
INCLUDE = re.compile(r'^\s*#\s*include\s+"grelay/([a-z0-9_]+)\.h"', re.M)


def modules():
    names = set()
    for d, ext in (("src", ".c"), (os.path.join("include", "grelay"), ".h")):
        for f in os.listdir(os.path.join(ROOT, d)):
            if f.endswith(ext):
                names.add(f[: -len(ext)])
    return sorted(names)


def files_of(m):
    out = []
    for path in (os.path.join(ROOT, "src", m + ".c"), os.path.join(ROOT, "include", "grelay", m + ".h")):
        if os.path.exists(path):
            out.append(path)
    return out


def graph():
    g = {}
    for m in modules():
        deps = set()
        for path in files_of(m):
            with open(path, encoding="utf-8") as f:
                deps.update(INCLUDE.findall(f.read()))
        deps.discard(m)
        g[m] = deps
    return g


def find_cycles(g):
    """Tarjan's strongly connected components: each of size > 1 is a cycle."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def topo(g):
    order, seen = [], set()

    def visit(v):
        if v in seen:
            return
        seen.add(v)
        for w in sorted(g[v]):
            if w in g:
                visit(w)
        order.append(v)

    for v in sorted(g):
        visit(v)
    return order


def long_functions(path):
    """Top-level function bodies: a line opening with '{' after a signature,
    to the matching '}' in column 0."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0 and "(" in "".join(lines[max(0, i - 4) : i]) and "=" not in lines[i - 1]:
            j = i + 1
            while j < len(lines) and lines[j] != "}":
                j += 1
            n = j - i - 1
            if n > MAX_FUNCTION_LINES:
                k = i - 1
                while k > 0 and "(" not in lines[k]:
                    k -= 1
                name = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", lines[k])
                out.append((name[0] if name else "?", i + 1, n))
            i = j
        i += 1
    return out


def main():
    g = graph()
    problems = []
    for cyc in find_cycles(g):
        edges = [f"{a} -> {b}" for a in cyc for b in sorted(g[a]) if b in cyc]
        problems.append("include cycle among " + ", ".join(cyc) + " (" + "; ".join(edges) + ")")
    n_files = 0
    for d in ("src", os.path.join("include", "grelay")):
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            path = os.path.join(ROOT, d, f)
            n_files += 1
            with open(path, encoding="utf-8") as fh:
                n = fh.read().count("\n")
            if n > MAX_FILE_LINES:
                problems.append(f"{d}/{f}: {n} lines (at most {MAX_FILE_LINES})")
            if f.endswith(".c"):
                for name, line, length in long_functions(path):
                    problems.append(f"{d}/{f}:{line}: {name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
    if "--graph" in sys.argv:
        for m in topo(g):
            print(f"{m}: {' '.join(sorted(d for d in g[m] if d in g))}")
    for p in problems:
        print("check-structure: " + p)
    if problems:
        return 1
    print(f"check-structure: {len(g)} modules, no include cycle; {n_files} files within "
          f"{MAX_FILE_LINES} lines; functions within {MAX_FUNCTION_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
