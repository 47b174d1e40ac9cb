"""The Prometheus fixture (prometheus.py) itself: a real Prometheus scrapes
its own /metrics, and a target where nothing listens is seen down."""
import time

from harness import free_port
from prometheus import check_metrics, labels, prometheus_factory  # noqa: F401 (a fixture)


def test_prometheus_scrapes_itself(prometheus_factory):  # noqa: F811
    port = free_port()
    dead = "127.0.0.1:%d" % free_port()  # nothing listens there
    me = "127.0.0.1:%d" % port
    after = time.time()
    prom = prometheus_factory({"self": [me], "dead": [dead]}, port=port)
    prom.wait_scraped(me, after)
    assert prom.query('up{job="self"}') == {labels(instance=me, job="self", __name__="up"): 1.0}
    assert prom.target(dead)["health"] in ("unknown", "down")
    # what it scraped from itself passes promtool, which does reject bad text
    import urllib.request
    with urllib.request.urlopen(prom.url + "/metrics", timeout=5) as r:
        code, out = check_metrics(r.read().decode())
    assert code == 0, out
    code, _ = check_metrics("# TYPE x counter\nx{a=\"1\"} one\n")
    assert code != 0
