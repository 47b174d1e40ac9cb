"""A real Prometheus server for the integration tests: Debian's
/usr/bin/prometheus on a loopback port, with its own data directory and a
generated scrape config (every second, one job per target list), stopped by
PID. Use the fixture:

    from prometheus import prometheus_factory  # noqa: F401 (a fixture)

    def test_x(prometheus_factory):
        prom = prometheus_factory({"grelay": ["127.0.0.1:9901"]})
        after = time.time()
        ...                                      # make calls
        prom.wait_scraped("127.0.0.1:9901", after)
        assert prom.query('grelay_requests_total{grpc_code="OK"}') == {...}

query() answers {labels: value} where labels is a tuple of (name, value)
pairs sorted by name; labels() builds such a tuple."""
import datetime
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import free_port, stop

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def labels(**kw):
    """The key query() gives a series with these labels."""
    return tuple(sorted(kw.items()))


def check_metrics(text):
    """`promtool check metrics` on an exposition: (exit code, its output)."""
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


class Prometheus:
    """One prometheus process; jobs maps a job name to its targets
    ("127.0.0.1:PORT"), scraped every second at metrics_path."""

    def __init__(self, jobs, port=None, metrics_path="/metrics", ready_seconds=60):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.dir = tempfile.TemporaryDirectory(prefix="prometheus-")
        self.config_path = os.path.join(self.dir.name, "prometheus.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                "static_configs": [{"targets": list(targets)}]}
                               for job, targets in jobs.items()],
        }
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)  # JSON is YAML
        r = subprocess.run([PROMTOOL, "check", "config", self.config_path], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            self.dir.cleanup()
            raise RuntimeError("promtool rejects the generated config:\n" + r.stdout + r.stderr)
        self.log_path = os.path.join(self.dir.name, "prometheus.log")
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + self.config_path,
             "--storage.tsdb.path=" + os.path.join(self.dir.name, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log_file, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_seconds)
        except Exception:
            self.stop()
            raise

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def _get(self, path, params=None, timeout=5):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()

    def _wait_ready(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited with %s:\n%s" % (self.proc.returncode, self.log()[-4000:]))
            try:
                if self._get("/-/ready", timeout=1)[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus not ready after %ds:\n%s" % (seconds, self.log()[-4000:]))

    def api(self, path, params=None):
        """GET /api/v1/<path>: its "data", or RuntimeError with Prometheus' error."""
        try:
            _, body = self._get("/api/v1/" + path, params)
        except urllib.error.HTTPError as e:
            body = e.read()
        out = json.loads(body)
        if out.get("status") != "success":
            raise RuntimeError("prometheus %s %s: %s: %s" % (path, params, out.get("errorType"), out.get("error")))
        return out["data"]

    def query(self, expr):
        """An instant query now: {labels tuple: value} (a scalar: {(): value})."""
        data = self.api("query", {"query": expr})
        if data["resultType"] == "scalar":
            return {(): float(data["result"][1])}
        if data["resultType"] != "vector":
            raise RuntimeError("query %r gave a %s, not a vector" % (expr, data["resultType"]))
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in data["result"]}

    def target(self, target):
        """The active target whose instance is target, or None."""
        for t in self.api("targets", {"state": "active"})["activeTargets"]:
            if t["labels"].get("instance") == target:
                return t
        return None

    def wait_scraped(self, target, after, seconds=30):
        """Waits until a scrape of target that began after `after` (a
        time.time()) succeeded and its samples can be queried. Raises
        with the target's last error when none did within seconds."""
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            last = self.target(target)
            if last is not None and last["health"] == "up" and _rfc3339(last["lastScrape"]) > after:
                # The target's state is set as the scrape ends; its samples
                # (and its up sample, at the scrape's time) are then committed.
                stamp = self.query('timestamp(up{instance="%s"} == 1)' % target)
                if stamp and max(stamp.values()) > after:
                    return
            time.sleep(0.2)
        raise AssertionError("no successful scrape of %s after %.3f within %ds; target: %s" %
                             (target, after, seconds, json.dumps(last)))

    def stop(self):
        if self.proc is not None:
            code = stop(self.proc)
            self.proc = None
            self.log_file.close()
            self.dir.cleanup()
            return code
        return None


def _rfc3339(text):
    """Prometheus' "2026-12-01T18:20:01.123456789Z" as a time.time()."""
    if text.startswith("0001-01-01"):  # never scraped
        return 0.0
    return datetime.datetime.fromisoformat(text).timestamp()


@pytest.fixture
def prometheus_factory():
    """Starts Prometheus servers (Prometheus(jobs, port=None)); stops them after the test."""
    running = []

    def start(jobs, port=None, **kw):
        p = Prometheus(jobs, port, **kw)
        running.append(p)
        return p

    yield start
    for p in running:
        p.stop()
