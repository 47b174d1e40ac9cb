"""The command line as users' scripts call it, the shipped configs, and the README demo."""
import glob
import os
import subprocess

import pytest

from harness import GRELAY, ROOT


def run(*args, timeout=30):
    return subprocess.run([GRELAY, *args], capture_output=True, text=True, timeout=timeout)


def cleartext_configs():
    """The shipped configs that name no certificate files (test_tls.py checks
    the others with certificates it makes)."""
    return [p for p in sorted(glob.glob(os.path.join(ROOT, "conf", "*.yaml"))) if "/etc/grelay/" not in open(p).read()]


@pytest.mark.parametrize("path", cleartext_configs())
def test_shipped_configs_pass_check(path):
    r = run("--check", "--config", path)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


ONE_ROUTE = ("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n"
             "      - name: v\n        domains: ['*']\n        routes:\n"
             "          - match: { prefix: / }\n")


@pytest.mark.parametrize("last_line,message", [
    ("            clustr: x\n", ":9:13: unknown key 'clustr' in route"),
    ("            cluster: nowhere\n", ":9:22: route names cluster 'nowhere', which is not defined"),
])
def test_check_reports_file_line_column(tmp_path, last_line, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ONE_ROUTE + last_line)
    r = run("--check", "--config", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith(str(bad) + message), r.stderr


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("grelay ")
    r = run("--help")
    assert r.returncode == 0 and "--config" in r.stdout and "--check" in r.stdout


def test_missing_config_file_is_an_error():
    r = run("--config", "/nonexistent/grelay.yaml")
    assert r.returncode == 1
    assert "/nonexistent/grelay.yaml: cannot open" in r.stderr


def test_port_in_use_is_reported(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text('{"workers": 1, "listeners": [{"name": "l", "address": "127.0.0.1:%d", "virtual_hosts": '
                       '[{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "c"}]}]}],'
                       ' "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:1"}]}]}' % port)
        r = run("--config", str(cfg))
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1:%d" % port in r.stderr


def test_readme_demo_runs():
    """The README's first command, in its non-interactive form."""
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--once"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hello, newcomer! (from backend-1)" in r.stdout
    assert "'backend-1': 2, 'backend-2': 2, 'backend-3': 2" in r.stdout
    assert "Greeting 5 of 5" in r.stdout
    assert "no route -> UNIMPLEMENTED" in r.stdout
