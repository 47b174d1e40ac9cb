"""The documentation's links, and the README's tour commands.

Every relative link of README.md, docs/*.md and bench/README.md names a
file or directory of the tree, and every #anchor names a heading (as GitHub
makes its id) or an explicit <a id> of the page it points to, so moving a
section cannot leave a link behind. Links inside code (fenced blocks, `spans`)
are not links. And the commands of the README's tour (demo/client.py and the
h2load line) run as written against a grelay and a demo backend."""
import glob
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from harness import PY, ROOT, free_port

PAGES = sorted([os.path.join(ROOT, "README.md"), os.path.join(ROOT, "bench", "README.md")]
               + glob.glob(os.path.join(ROOT, "docs", "*.md")))

LINK = re.compile(r"(?<!\!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"]*\")?\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def prose(text):
    """The page without fenced code blocks and inline code spans (line count kept)."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"(`+).*?\1", "", line))
    return "\n".join(out)


def slug(heading):
    """GitHub's id for a heading's text: HTML and code marks dropped, lower
    case, punctuation but '-' and '_' removed, each space a '-'."""
    t = re.sub(r"<!--.*?-->", "", heading)
    t = re.sub(r"<[^>]+>", "", t)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = t.replace("`", "").strip().lower()
    t = re.sub(r"[^\w\- ]", "", t)
    return t.replace(" ", "-")


def anchors(path):
    """Every id a page offers: its headings' (with GitHub's -1, -2 for
    repeats) and its explicit <a id=...> / <a name=...>."""
    text = open(path, encoding="utf-8").read()
    ids, seen = set(), {}
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            ids.add(s if n == 0 else "%s-%d" % (s, n))
    ids.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return ids


def links(path):
    """(line, target) of every link and image in the page's prose."""
    text = prose(open(path, encoding="utf-8").read())
    found = [(m.start(), m.group(2)) for m in LINK.finditer(text)]  # link text may wrap
    found += [(m.start(), m.group(1)) for m in IMAGE.finditer(text)]
    return [(text.count("\n", 0, at) + 1, target) for at, target in sorted(found)]


def check(page, target, cache):
    """None when target resolves from page, else what is wrong."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    rel = os.path.relpath(dest, ROOT)
    if not os.path.exists(dest):
        return "no such file %s" % rel
    if anchor and dest.endswith(".md"):
        if dest not in cache:
            cache[dest] = anchors(dest)
        if anchor not in cache[dest]:
            return "no anchor #%s in %s" % (anchor, rel)
    return None


def test_github_ids():
    """The id rule on headings these pages have."""
    assert slug("HTTP/1.1 (gRPC-Web) front end") == "http11-grpc-web-front-end"
    assert slug("Idle memory: hibernation (done)") == "idle-memory-hibernation-done"
    assert slug('listeners[] <a id="listeners"></a> <!-- fields: listener_fields -->') == "listeners"
    assert slug("Syscalls, packets and CPU per call: `bench/syscalls.py`") == \
        "syscalls-packets-and-cpu-per-call-benchsyscallspy"
    assert slug("gRPC-Web (browsers)") == "grpc-web-browsers"


def test_every_relative_link_resolves():
    cache, problems, checked, with_anchor = {}, [], 0, 0
    for page in PAGES:
        for no, target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            checked += 1
            with_anchor += "#" in target
            why = check(page, target, cache)
            if why:
                problems.append("%s:%d: (%s): %s" % (os.path.relpath(page, ROOT), no, target, why))
    assert checked >= 100 and with_anchor >= 30, \
        "only %d relative links (%d with an anchor) found: has the link parser broken?" % (checked, with_anchor)
    assert not problems, "\n".join(problems)


def test_a_broken_link_is_found(tmp_path):
    """The checker itself: a missing file, a missing anchor and a good anchor."""
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: here (too)\n")
    page.write_text("[a](other.md#a-section-here-too) [b\nwrapped](other.md#nowhere) [c](gone.md) `[d](gone.md)`\n"
                    "```\n[e](gone.md)\n```\n")
    found = [(t, check(str(page), t, {})) for _, t in links(str(page))]
    assert found == [("other.md#a-section-here-too", None), ("other.md#nowhere", "no anchor #nowhere in %s" %
                     os.path.relpath(str(tmp_path / "other.md"), ROOT)),
                     ("gone.md", "no such file %s" % os.path.relpath(str(tmp_path / "gone.md"), ROOT))]


def tour_commands():
    """The README tour's first sh block, as lines of shell (continuations joined)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## A tour with the demo\n.*?```sh\n(.*?)```", text, re.S).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").split("\n") if c.strip() and not c.startswith("#")]


@pytest.fixture
def demo_backend():
    port = free_port()
    proc = subprocess.Popen([PY, os.path.join(ROOT, "demo", "greeter_server.py"), "backend-1", "127.0.0.1:%d" % port],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        yield "127.0.0.1:%d" % port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_readme_tour_commands_run(tmp_path, demo_backend, grelay_factory):
    """demo/client.py and the h2load line, as the README writes them, with
    grelay's port and the payload file moved to this test's."""
    cmds = tour_commands()
    assert len(cmds) == 3 and cmds[0].startswith("/usr/bin/python3 demo/client.py") and \
        cmds[2].startswith("h2load "), cmds
    port, admin = free_port(), free_port()
    cfg = {"workers": 1, "admin": {"address": "127.0.0.1:%d" % admin},
           "listeners": [{"name": "ingress", "address": "127.0.0.1:%d" % port, "virtual_hosts": [
               {"name": "default", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "demo"}]}]}],
           "clusters": [{"name": "demo", "endpoints": [{"address": demo_backend}]}]}
    g = grelay_factory(cfg, port)
    payload = str(tmp_path / "hello.bin")
    outs = []
    for c in cmds:
        c = c.replace("127.0.0.1:8080", "127.0.0.1:%d" % port).replace("/tmp/hello.bin", payload)
        r = subprocess.run(["bash", "-c", c], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, c + "\n" + r.stdout + r.stderr
        outs.append(r.stdout)
    assert "unary  1: Hello, YourName! (from backend-1)" in outs[0], outs[0]
    assert "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed" in outs[2], outs[2]
    ok = 0
    for _ in range(50):  # a call is counted as its stream closes, just after its last frame left
        with urllib.request.urlopen("http://127.0.0.1:%d/stats.json" % admin, timeout=10) as r:
            calls = json.loads(r.read())["calls"]
        ok = sum(c["codes"].get("OK", 0) for c in calls if c["method"] == "SayHello")
        if ok >= 1000 + 6:
            break
        time.sleep(0.1)
    assert ok == 1000 + 6, calls  # h2load's calls and client.py's six, each a gRPC OK
    g.stop()
