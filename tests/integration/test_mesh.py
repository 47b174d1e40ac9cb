"""The mesh in a box (docs/mesh.md, issue 17): an edge grelay (TLS,
gRPC-Web), service A behind its inbound sidecar calling service B through
its outbound sidecar, three replicas of B behind their inbound sidecars
(mTLS, strict_dns from a dnsmasq, health checks), one Prometheus scraping
every grelay. Under steady load from gRPC and gRPC-Web clients, in this
order (the tests share the mesh and its load, each one leaves it as the next
expects): deadlines hop by hop, Prometheus' counts hop by hop, a rolling
restart of B, a ConfigMap change on every sidecar, a replica killed, the
counts at the end. The topology and the scenarios are mesh.py's, which
scripts/mesh.sh runs for a person; the assertions are here."""
import os
import re
import subprocess
import sys
import time

import pytest

import mesh as m

OFF = m.OFFSET_MS / 1000.0
# grpcio sends a grpc-timeout about 0.1 s above the one it was given: the
# client's 10 s went out as 10100m, A's 9.599 s reached B's sidecar as 9.71 s
ROUND_UP = 0.2


@pytest.fixture(scope="module")
def box():
    mesh = m.Mesh()
    mesh.start()
    yield mesh
    mesh.stop()
    assert mesh.problems == [], "\n".join(mesh.problems)


@pytest.fixture(scope="module")
def load(box):
    load = m.Load(box, grpc_clients=2, web_clients=1)
    yield load
    load.stop()


def test_the_script_a_person_runs_shows_the_same():
    """scripts/mesh.sh's program (mesh.py --once, on free ports), first,
    before the tests' own mesh starts: it says where to look, what each step
    did, and that every step went as expected."""
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(m.__file__), "mesh.py"), "--once",
                        "--free-ports"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    out = r.stdout
    for host in ("127.0.1.10", "127.0.1.20", "127.0.1.31", "127.0.1.32", "127.0.1.33"):
        assert "live view http://%s:" % host in out, out
    assert "Prometheus    http://127.0.0.1:" in out and "== every step as expected" in out, out
    assert re.search(r"\d+ calls meanwhile, 0 failed\n== 4", out), out  # the rolling restart
    assert re.search(r"\d+ calls meanwhile, 0 failed; now A sees 7\.\d+ s and B 3\.\d+ s", out), out


def logs(box):
    return "\n".join("== %s\n%s" % (p.name, p.log()[-1500:]) for p in box.proxies() if p is not None)


def test_deadlines_shrink_hop_by_hop_and_b_sees_what_is_left(box, load):
    t0 = time.monotonic()
    calls = load.wait_calls(t0, 10, kind="grpc") + load.wait_calls(t0, 5, kind="web")
    assert m.failed(calls) == []
    for c in calls:
        took = c["end"] - c["start"]
        # each grelay sends what is left less its route's grpc_timeout_offset:
        # edge and A-inbound before A, A-outbound and B-inbound before B
        assert c["a_remaining"] <= m.CALL_TIMEOUT + ROUND_UP - 2 * OFF, c
        assert c["b_remaining"] <= c["a_remaining"] + ROUND_UP - 2 * OFF, c
        # and B gets all that is left: the time the call took is all it lost besides the offsets
        assert c["b_remaining"] >= m.CALL_TIMEOUT - 4 * OFF - took, c


def test_prometheus_counts_agree_hop_by_hop_and_per_replica(box, load):
    load.wait_calls(time.monotonic(), 20)
    r = m.hop_counts(box, load)
    assert r["client_failures"] == 0
    assert r["hops"] == {hop: r["clients"] for hop in m.HOPS}, r
    assert set(r["attempts"]) == {m.HOSTS[b] for b in m.REPLICAS}, r
    assert r["attempts"] == r["served"], r  # what A's outbound sidecar sent each replica, that replica's sidecar got
    assert all(v > 0 for v in r["served"].values()), r


def test_a_rolling_restart_of_b_costs_no_call(box, load):
    r = m.rolling_restart(box, load)
    assert [s["replica"] for s in r["steps"]] == list(m.REPLICAS)
    assert all(s["seen"] in ("unhealthy", "ejected", "draining") for s in r["steps"]), r["steps"]
    # each sidecar's drain let every call finish
    assert all(len(s["drained"]) == 1 and s["drained"][0].endswith(" 0 cut") for s in r["steps"]), r["steps"]
    assert len(r["calls"]) > 30
    assert m.failed(r["calls"]) == [], logs(box)
    # a replica that drains is not an outlier: no call of it failed, none was ejected for failing
    assert box.a_out.metric("grelay_upstream_ejections_total", reason="consecutive_failures") == 0, logs(box)


def test_a_configmap_change_reaches_every_sidecar_with_no_failed_call(box, load):
    r = m.config_change(box, load)
    assert m.failed(r["calls"]) == [], logs(box)
    assert all(v == 0 for v in r["failed_reloads"].values()), r["failed_reloads"]
    # every sidecar calls its route by its new name...
    assert all(v > 0 for v in r["routes_v2"].values()), r["routes_v2"]
    # ...and applies its new max_grpc_timeout: A-inbound caps 10 s at 8 s, B-inbound at 4 s
    for c in r["after"]:
        assert c["a_remaining"] <= 8.0 - OFF + 0.001 and c["b_remaining"] <= 4.0 - OFF + 0.001, c


def test_a_replica_killed_costs_only_its_calls_in_flight(box, load):
    r = m.kill_replica(box, load, "b3")
    dead = box.endpoint_of("b3")
    lost = m.failed(r["around"])
    # each client has one call in flight at a time: at most that many were on b3
    assert len(lost) <= len(load.threads), lost
    for c in lost:
        assert c["code"] == "UNAVAILABLE" and dead in c["details"] and "connection lost" in c["details"], c
    assert m.failed(r["after"]) == [], logs(box)  # none once it is out
    assert {c["replica"] for c in r["after"]} <= {"b1", "b2"}
    assert r["attempts_end"] == r["attempts_at_out"]  # the outbound sidecar sent it nothing more


def test_prometheus_counts_agree_at_the_end(box, load):
    r = m.hop_counts(box, load)
    # the hops that were never restarted saw every call the clients made, with the same statuses
    for hop in ("edge", "a-inbound", "a-outbound"):
        assert r["hops"][hop] == r["clients"], r
        assert r["codes"].get((hop, "UNAVAILABLE"), 0) == r["client_failures"], r
    assert r["client_failures"] <= len(load.threads)

