"""docs/configuration.md against the schema tables it documents.

Every `struct config_field` table in src/*.c has a section in the doc (the
heading carries `<!-- fields: TABLE -->`), and that section has one row per
key of the table, no more; numeric rows state the table's bounds, and rows
whose default is a plain value state the default the schema's init function
sets. A key added to a table without its row, a bound or a default changed
in the code and not in the doc, fails here.

And the alerting rules docs/operations.md ships (deploy/prometheus/): they
pass `promtool check rules` and their unit tests (`promtool test rules`),
and every metric and label they name is one a running grelay exposes; the
same for the PromQL examples of docs/operations.md."""
import glob
import json
import os
import re
import subprocess
import urllib.request

import pytest

from harness import GRELAY, ROOT, free_port, simple_config

DOC = os.path.join(ROOT, "docs", "configuration.md")
SOURCES = sorted(glob.glob(os.path.join(ROOT, "src", "*.c")))


def source_text():
    return "\n".join(open(p).read() for p in SOURCES)


def defines():
    """#define NAME <number> of the sources and headers, for bounds written as a macro."""
    out = {}
    for p in SOURCES + sorted(glob.glob(os.path.join(ROOT, "include", "grelay", "*.h"))):
        for m in re.finditer(r"^#define ([A-Z][A-Z0-9_]*) \(?(\d+)(?:ull|ul|u)?\)?(?:\s|$)", open(p).read(), re.M):
            out[m.group(1)] = m.group(2)
    return out


DEFINES = defines()


def c_value(expr):
    """A C constant expression of the tables (1u << 20, 24ull * 3600 * 1000,
    UINT32_MAX) as a Python int, or None when it is not one."""
    e = re.sub(r"\b(\d+)(?:ull|ul|ll|u)\b", r"\1", expr.strip())
    e = e.replace("UINT32_MAX", "4294967295")
    e = re.sub(r"\b[A-Z][A-Z0-9_]*\b", lambda m: DEFINES.get(m.group(0), m.group(0)), e)
    if not re.fullmatch(r"[\d\s()+\-*<>]+", e):
        return None
    return int(eval(e, {"__builtins__": {}}))  # digits and operators only, checked above


def parse_tables(src):
    """{table: [field]} where a field is a dict: key, set, member, min, max, names, sub."""
    tables = {}
    for m in re.finditer(r"(?:static )?const struct config_field (\w+)\[\] = \{(.*?)\n\};", src, re.S):
        fields = []
        for entry in re.split(r"\{\s*\.key", m.group(2))[1:]:
            f = {"key": re.match(r'\s*=\s*"([^"]+)"', entry).group(1)}
            for attr, pat in (("set", r"\.set = (\w+)"), ("member", r"\.off = OFF\(\s*struct \w+,\s*([\w.]+)\)"),
                              ("min", r"\.min = ([^,}]+)"), ("max", r"\.max = ([^,}]+)"),
                              ("names", r"\.names = (\w+)"), ("sub", r"\.sub = &(\w+)")):
                a = re.search(pat, entry)
                f[attr] = a.group(1).strip() if a else None
            fields.append(f)
        tables[m.group(1)] = fields
    return tables


def parse_names(src):
    return {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
            for m in re.finditer(r"const char \*const (\w+)\[\] = \{([^}]*)\}", src)}


def parse_schemas(src):
    """{schema: (fields table, init function or None)}."""
    out = {}
    for m in re.finditer(r"const struct config_schema (\w+) = \{(.*?)\};", src, re.S):
        body = m.group(2)
        while re.search(r"\([^()]*\)", body):
            body = re.sub(r"\([^()]*\)", "", body)
        parts = [p.strip() for p in body.split(",")]
        out[m.group(1)] = (parts[3], None if parts[4] == "NULL" else parts[4])
    return out


def function_body(src, name, depth=1):
    """The body of C function name, with the bodies of the functions it calls (depth levels)."""
    m = re.search(r"\b(?:void|int) " + name + r"\([^)]*\)\s*\{", src)
    if m is None:
        return ""
    level, i = 1, m.end()
    while level and i < len(src):
        level += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
    body = src[m.end():i - 1]
    if depth > 0:
        for callee in set(re.findall(r"\b(\w+)\(", body)):
            if callee != name:
                body += "\n" + function_body(src, callee, depth - 1)
    return body


def assignments(body):
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"(?:\w|\))->([\w.]+) = ([^;]+);", body)}


def code_defaults(src, tables, schemas):
    """{table: {key: the value its init sets, as C text, or None when unset}}."""
    init_of = {fields: init for fields, init in schemas.values()}
    schema_fields = {name: fields for name, (fields, _) in schemas.items()}
    parent = {}  # a table without an init: (the parent's table, the member that holds it)
    for tname, fields in tables.items():
        for f in fields:
            if f["sub"] and schema_fields.get(f["sub"]):
                parent.setdefault(schema_fields[f["sub"]], (tname, f["member"]))
    out = {}
    for tname, fields in tables.items():
        prefix, init = "", init_of.get(tname)
        if init is None and tname in parent:
            ptable, member = parent[tname]
            prefix, init = member + ".", init_of.get(ptable)
        assigned = assignments(function_body(src, init)) if init else {}
        out[tname] = {f["key"]: assigned.get(prefix + (f["member"] or "")) for f in fields}
    return out


def parse_doc():
    """{table: {key: [cells]}} from the sections marked <!-- fields: TABLE -->."""
    sections, current = {}, None
    for line in open(DOC):
        if line.startswith("#"):
            m = re.search(r"<!-- fields: (\w+) -->", line)
            current = m.group(1) if m else None
            if current is not None:
                assert current not in sections, f"two sections for {current}"
                sections[current] = {}
            continue
        m = re.match(r"\| `(\w+)` \|", line)
        if current is not None and m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert m.group(1) not in sections[current], f"{current}: '{m.group(1)}' has two rows"
            sections[current][m.group(1)] = cells
    return sections


UNIT_MS = {"h": 3600000, "m": 60000, "s": 1000, "ms": 1, "us": 0.001}
UNIT_B = {"": 1, "B": 1, "K": 1 << 10, "Ki": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "Mi": 1 << 20, "MiB": 1 << 20,
          "G": 1 << 30, "Gi": 1 << 30, "GiB": 1 << 30, "PiB": 1 << 50}
NUMERIC = {"config_yaml_set_u32": "number", "config_yaml_set_size": "size", "config_yaml_set_size64": "size",
           "config_yaml_set_duration": "duration", "config_yaml_set_bool": "bool", "config_set_percent": "percent"}


def doc_value(text, kind):
    """A value as the doc writes it (64KiB, 1.5s, 2^31-1, 50%) in the table's unit, or None."""
    t = text.strip().strip("`")
    if re.fullmatch(r"2\^(\d+)-1", t):
        return (1 << int(t[2:-2])) - 1
    if kind == "duration":
        if t == "0":
            return 0
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)", t)
        return None if m is None else -(-float(m.group(1)) * UNIT_MS[m.group(2)] // 1)
    if kind == "size":
        m = re.fullmatch(r"(\d+)(B|K|Ki|KiB|M|Mi|MiB|G|Gi|GiB|PiB)?", t)
        return None if m is None else int(m.group(1)) * UNIT_B[m.group(2) or ""]
    if kind in ("number", "percent"):
        m = re.fullmatch(r"(\d+)%?", t)
        return None if m is None else int(m.group(1))
    if kind == "bool":
        return {"true": True, "false": False}.get(t)
    return None


@pytest.fixture(scope="module")
def schema():
    src = source_text()
    tables = parse_tables(src)
    assert len(tables) >= 20, "the table parser found too few config_field tables: has their syntax changed?"
    return src, tables, parse_names(src), parse_schemas(src), parse_doc()


def test_every_table_has_a_section(schema):
    _, tables, _, _, doc = schema
    missing = sorted(set(tables) - set(doc))
    assert not missing, f"schema tables with no '<!-- fields: TABLE -->' section in docs/configuration.md: {missing}"
    stale = sorted(set(doc) - set(tables))
    assert not stale, f"docs/configuration.md has sections for tables that no longer exist: {stale}"


def test_every_key_has_a_row_and_no_row_is_stale(schema):
    _, tables, _, _, doc = schema
    problems = []
    for tname, fields in sorted(tables.items()):
        keys = [f["key"] for f in fields]
        rows = doc.get(tname, {})
        problems += [f"{tname}: key '{k}' is not documented" for k in keys if k not in rows]
        problems += [f"{tname}: documented key '{k}' is not in the table" for k in rows if k not in keys]
    assert not problems, "\n".join(problems)


def test_rows_have_every_column(schema):
    _, _, _, _, doc = schema
    short = [f"{t}.{k}: {len(c)} cells" for t, rows in doc.items() for k, c in rows.items() if len(c) != 6]
    assert not short, "rows need key | type | default | bounds | what | Envoy:\n" + "\n".join(short)


def test_bounds_are_the_tables(schema):
    _, tables, _, _, doc = schema
    problems = []
    for tname, fields in tables.items():
        for f in fields:
            kind = NUMERIC.get(f["set"])
            if kind not in ("number", "size", "duration"):
                continue
            cells = doc.get(tname, {}).get(f["key"])
            if cells is None:
                continue  # reported by the test above
            m = re.match(r"`?([^ .`]+)`?\.\.`?([^ ,;`(]+)", cells[3])
            lo = doc_value(m.group(1), kind) if m else None
            hi = doc_value(m.group(2), kind) if m else None
            want = (c_value(f["min"] or "0"), c_value(f["max"] or "0"))
            if (lo, hi) != want:
                problems.append(f"{tname}.{f['key']}: the doc says '{cells[3]}', the table {want[0]}..{want[1]}")
    assert not problems, "\n".join(problems)


def test_defaults_are_the_code(schema):
    src, tables, names, schemas, doc = schema
    defaults = code_defaults(src, tables, schemas)
    problems, checked = [], 0
    for tname, fields in tables.items():
        for f in fields:
            cells = doc.get(tname, {}).get(f["key"])
            if cells is None:
                continue
            written = re.split(r"[ (/]", cells[2].strip())[0]
            code = defaults[tname][f["key"]]
            if f["set"] == "config_yaml_set_enum":
                if code is None and written.strip("`") != names[f["names"]][0]:
                    problems.append(f"{tname}.{f['key']}: the doc says {written}, the code {names[f['names']][0]}")
                checked += 1
                continue
            kind = NUMERIC.get(f["set"])
            value = doc_value(written, kind) if kind else None
            if value is None:
                continue  # "required", "none", "the CPUs online": said in words
            if code is None:
                expect = False if kind == "bool" else 0
            elif kind == "bool":
                expect = {"true": True, "false": False}.get(code)
            else:
                expect = c_value(code)
            checked += 1
            if value != expect:
                problems.append(f"{tname}.{f['key']}: the doc says {written}, the code sets {code or 'nothing (0)'}")
    assert checked >= 50, f"only {checked} defaults compared: has the doc's or the code's shape changed?"
    assert not problems, "\n".join(problems)


def test_the_doc_examples_pass_check(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", open(DOC).read(), re.S)
    whole = [b for b in blocks if b.startswith("workers:") or b.startswith("listeners:")]
    assert whole, "docs/configuration.md lost its example file"
    for i, b in enumerate(whole):
        p = tmp_path / f"example{i}.yaml"
        p.write_text(b)
        r = subprocess.run([GRELAY, "--check", "--config", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr



RULES = os.path.join(ROOT, "deploy", "prometheus", "grelay-rules.yaml")
RULES_TEST = os.path.join(ROOT, "deploy", "prometheus", "grelay-rules.test.yaml")


def doc_queries():
    """The PromQL of docs/operations.md's ```promql blocks, one expression per
    entry (indented lines continue the one above; # lines are comments)."""
    text = open(os.path.join(ROOT, "docs", "operations.md")).read()
    out = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0].isspace() and out:
                out[-1] += " " + line.strip()
            else:
                out.append(line.strip())
    return out


def test_rules_pass_promtool(tmp_path):
    r = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    queries = doc_queries()
    assert len(queries) >= 5, queries
    doc_rules = tmp_path / "doc-queries.yaml"
    rules = ["      - record: doc:query_%d\n        expr: '%s'\n" % (i, q.replace("'", "''"))
             for i, q in enumerate(queries)]
    doc_rules.write_text("groups:\n  - name: doc\n    rules:\n" + "".join(rules))
    r = subprocess.run(["promtool", "check", "rules", str(doc_rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "a query in docs/operations.md does not parse:\n" + r.stdout + r.stderr
    r = subprocess.run(["promtool", "test", "rules", RULES_TEST], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def documented_labels():
    """{metric: labels} from docs/observability.md's tables (values in the labels column count too)."""
    out = {}
    for line in open(os.path.join(ROOT, "docs", "observability.md")):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`grelay_"):
            out[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[2]))
    return out


def test_rules_name_what_grelay_exposes(grelay_factory):
    admin = free_port()
    cfg = simple_config(free_port(), ["127.0.0.1:1"])
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin}
    g = grelay_factory(cfg, int(cfg["listeners"][0]["address"].rsplit(":", 1)[1]))
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=10) as r:
        exposition = r.read().decode()
    g.stop()
    types = dict(re.findall(r"^# TYPE (\w+) (\w+)$", exposition, re.M))
    assert "grelay_requests_total" in types and "process_open_fds" in types, exposition[:2000]
    rules = open(RULES).read() + "\n".join(doc_queries())
    labels = documented_labels()
    problems = []
    for name in sorted(set(re.findall(r"(?<![\w:])((?:grelay|process)_\w+)", rules))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in types and types.get(base) != "histogram":
            problems.append(f"{name} is not in grelay's /metrics")
    for name, matchers in re.findall(r"(?<![\w:])(grelay_\w+)\{([^}]*)\}", rules):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        for label in re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", matchers):
            if label not in labels.get(base, set()) | {"job", "instance", "le"}:
                problems.append(f"{name}{{{label}}}: no such label in docs/observability.md")
    assert not problems, "\n".join(problems)


def test_operations_lists_every_alert():
    shipped = set(re.findall(r"^\s*- alert: (\w+)$", open(RULES).read(), re.M))
    listed = set(re.findall(r"^\| `(Grelay\w+)` \|", open(os.path.join(ROOT, "docs", "operations.md")).read(), re.M))
    assert shipped and shipped == listed, f"in the rules only: {shipped - listed}; in the doc only: {listed - shipped}"


def test_the_full_example_writes_every_key(schema, tmp_path, grelay_factory):
    """The doc's "Every key at once" file, run by grelay on free ports and read
    back from /config_dump, walked by the schema tables: it writes every key of
    every table but TLS's."""
    _, tables, _, schemas, _ = schema
    block = re.search(r"## Every key at once\n.*?```yaml\n(.*?)```", open(DOC).read(), re.S).group(1)
    port, admin = free_port(), free_port()
    path = tmp_path / "every-key.yaml"
    block = block.replace("0.0.0.0:8080", "127.0.0.1:%d" % port).replace("127.0.0.1:9901", "127.0.0.1:%d" % admin)
    path.write_text(block.replace("drain_delay: 5s", "drain_delay: 0s"))  # a quick stop
    g = grelay_factory(None, port, config_path=str(path))
    with urllib.request.urlopen("http://127.0.0.1:%d/config_dump" % admin, timeout=10) as r:
        tree = json.loads(r.read())
    g.stop()
    fields_of = {name: fields for name, (fields, _) in schemas.items()}
    seen = set()

    def walk(node, tname):
        by_key = {f["key"]: f for f in tables[tname]}
        for key, value in node.items():
            assert key in by_key, f"{tname}: '{key}' is not a key"
            seen.add((tname, key))
            f = by_key[key]
            if f["sub"]:
                for item in value if f["set"] == "config_yaml_set_list" else [value]:
                    walk(item, fields_of[f["sub"]])

    walk(tree, "top_fields")
    tls = {"tls_server_fields", "tls_client_fields", "sni_fields"}
    missing = [f"{t}.{f['key']}" for t, fs in sorted(tables.items()) if t not in tls for f in fs
               if (t, f["key"]) not in seen and not (f["key"] == "tls" and t in ("listener_fields", "cluster_fields"))]
    assert not missing, f"the full example does not write: {missing}"
