#!/usr/bin/env bash
# Builds grelay's container image (docker/Dockerfile) on this machine, with
# no registry: the Debian 12 base image is made here with debootstrap from
# Debian's mirror and imported into buildah's store as debian:bookworm-slim
# (and debian:bookworm, the build stage's base: the same minbase tree, which
# installs its compiler itself). The tree is cached in $GRELAY_IMAGE_CACHE
# (default /var/cache/grelay-image/), keyed by the debootstrap arguments, so a
# clean clone on the same machine skips it; buildah keeps its layers
# (--layers) in its own store, so only the compile step runs again when only
# the sources changed.
#
#   scripts/image.sh          build grelay:<version> (GRELAY_VERSION in include/grelay/common.h)
#   scripts/image.sh --test   build it, then run the image's grelay with `buildah run --isolation
#                             chroot` against a grpcio backend on loopback and check: the image's
#                             config (user, stop signal, ports, entry point), its default grelay.yaml
#                             passes --check, no compiler in it, grelay is on PATH and runs as a
#                             non-root user, the HEALTHCHECK's command sees /ready,
#                             a gRPC call goes through, and SIGTERM drains a call in flight (it
#                             finishes OK, grelay exits 0).
#
# Environment: GRELAY_IMAGE_CACHE (the base tree's cache), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), STORAGE_DRIVER (buildah's; default vfs,
# which works in any sandbox).
# Chroot isolation because runc/crun containers cannot start in these
# sandboxes; it shares the host's network, so loopback reaches the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

test=false
for arg in "$@"; do
  case "$arg" in
    --test) test=true ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh --image
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
version=$(sed -n 's/^#define GRELAY_VERSION "\(.*\)"$/\1/p' include/grelay/common.h)
[ -n "$version" ] || { echo "image.sh: no GRELAY_VERSION in include/grelay/common.h" >&2; exit 1; }
tag=localhost/grelay:$version
t0=$SECONDS
say() { printf '[image %3ds] %s\n' $((SECONDS - t0)) "$*"; }

# ---- the base image: debootstrap --variant=minbase, cached, imported once
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
db_args=(--variant=minbase "$suite")
key=$(printf '%s\n' "${db_args[@]}" "$mirror" | sha256sum | cut -c1-12)
cache=${GRELAY_IMAGE_CACHE:-/var/cache/grelay-image}/$suite-minbase-$key
base=docker.io/library/debian:bookworm-slim

make_tree() {
  local work
  work=$(mktemp -d /var/tmp/grelay-debootstrap.XXXXXX)
  say "debootstrap ${db_args[*]} from $mirror (once: cached in $cache)"
  debootstrap "${db_args[@]}" "$work/root" "$mirror" >"$work/log" 2>&1 ||
    { tail -n 20 "$work/log" >&2; rm -rf "$work"; exit 1; }
  cat >"$work/root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  mkdir -p "$cache"
  tar -C "$work/root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$cache/rootfs.tar.$$" .
  mv "$cache/rootfs.tar.$$" "$cache/rootfs.tar"   # whole or not at all, even with two runs at once
  rm -rf "$work"
}

have_base() {
  [ "$(buildah inspect --type image --format '{{index .ImageAnnotations "grelay.base"}}' "$base" 2>/dev/null)" = "$key" ]
}

if ! have_base; then
  [ -f "$cache/rootfs.tar" ] || make_tree
  say "importing $cache/rootfs.tar as $base"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$cache/rootfs.tar" / >/dev/null
  buildah config --cmd /bin/bash --annotation grelay.base="$key" "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  buildah tag "$base" docker.io/library/debian:bookworm
fi

# ---- the image. The build-deps and runtime stages are tagged, so that
# pruning the untagged step images afterwards (vfs stores every step as a
# full copy: hundreds of MB per source change) keeps their cached layers.
bud() { buildah bud --quiet --isolation chroot --layers --force-rm --pull-never --format docker \
  --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile "$@" . >/dev/null; }
say "buildah bud docker/Dockerfile -> $tag"
bud --target build-deps -t localhost/grelay-build-deps:latest
bud --target runtime -t localhost/grelay-runtime:latest
bud -t "$tag"
buildah rmi --prune >/dev/null 2>&1 || true
say "built $tag (user $(buildah inspect --type image --format '{{.Docker.Config.User}}' "$tag"))"
$test || exit 0

# ---- run it against a real backend on loopback
work=$(mktemp -d)
ctr=""
backend=""
grelay=""
cleanup() {
  [ -z "$grelay" ] || kill -KILL "$grelay" 2>/dev/null || true
  [ -z "$backend" ] || kill "$backend" 2>/dev/null || true
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(free_port)
lport=$(free_port)
aport=$(free_port)

mkfifo "$work/backend.out"
/usr/bin/python3 tests/peers/echo_server.py image-backend "127.0.0.1:$bport" >"$work/backend.out" \
  2>"$work/backend.err" &
backend=$!
read -r -t 30 line <"$work/backend.out" && [ "$line" = ready ] || { echo "backend did not start" >&2; exit 1; }

mkdir "$work/etc"
cat >"$work/etc/grelay.yaml" <<EOF
workers: 1
drain_timeout: 20s
drain_delay: 0s
admin: { address: 127.0.0.1:$aport }
listeners:
  - name: ingress
    address: 127.0.0.1:$lport
    virtual_hosts:
      - name: default
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: 127.0.0.1:$bport
EOF
chmod -R a+rX "$work"

ctr=$(buildah from --pull-never "$tag")
# What the image says about itself, as a runtime reads it.
buildah inspect --type image "$tag" | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)["Docker"]["config"]
want = {"User": "10001:10001", "StopSignal": "SIGTERM", "Entrypoint": ["/usr/local/bin/grelay"],
        "Cmd": ["--config", "/etc/grelay/grelay.yaml"]}
for k, v in want.items():
    assert c.get(k) == v, (k, c.get(k), v)
assert set(c["ExposedPorts"]) == {"8080/tcp", "9901/tcp"}, c["ExposedPorts"]
print("[image] config: user %s, stop signal %s, ports %s" % (c["User"], c["StopSignal"], " ".join(sorted(c["ExposedPorts"]))))'
# Its own default configuration loads with its own libraries; no compiler came along.
buildah run --isolation chroot "$ctr" -- grelay --check --config /etc/grelay/grelay.yaml >/dev/null ||
  { echo "the image's /etc/grelay/grelay.yaml does not pass --check" >&2; exit 1; }
if buildah run --isolation chroot "$ctr" -- sh -c 'command -v gcc cc cmake' >/dev/null 2>&1; then
  echo "the runtime image has a compiler in it" >&2
  exit 1
fi
say "the image's default configuration passes --check; no compiler in the runtime stage"
say "buildah run --isolation chroot $ctr -- grelay (listener :$lport, admin :$aport, backend :$bport)"
buildah run --isolation chroot -v "$work/etc:/etc/grelay:ro" "$ctr" -- grelay --config /etc/grelay/grelay.yaml \
  2>"$work/grelay.err" &
runner=$!

# grelay's own PID: the process named grelay among buildah run's descendants.
descendant_grelay() {
  ps -e -o pid=,ppid=,comm= | awk -v top="$runner" '
    { parent[$1] = $2; name[$1] = $3 }
    END { for (p in name) if (name[p] == "grelay") { q = p; while (q in parent && q != top) q = parent[q]; if (q == top) print p } }'
}
for _ in $(seq 100); do
  grelay=$(descendant_grelay)
  [ -n "$grelay" ] && break
  kill -0 "$runner" 2>/dev/null || { cat "$work/grelay.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$grelay" ] || { echo "no grelay process under buildah run" >&2; exit 1; }
uid=$(awk '/^Uid:/ {print $2}' "/proc/$grelay/status")
say "grelay runs as pid $grelay, uid $uid"
[ "$uid" != 0 ] || { echo "the image's grelay runs as root" >&2; exit 1; }

# The HEALTHCHECK's own command, in the container, until it passes.
check=$(buildah inspect --type image "$tag" | /usr/bin/python3 -c '
import json, sys
t = json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]
assert t[0] == "CMD-SHELL", t
print(t[1])')
ok=false
for _ in $(seq 50); do
  if buildah run --isolation chroot --env GRELAY_ADMIN_PORT="$aport" "$ctr" -- /bin/sh -c "$check" 2>/dev/null; then
    ok=true
    break
  fi
  kill -0 "$grelay" 2>/dev/null || break
  sleep 0.2
done
$ok || { echo "the HEALTHCHECK ($check) never passed" >&2; cat "$work/grelay.err" >&2; exit 1; }
say "HEALTHCHECK passes: $check"

# A call through it, then SIGTERM with a call in flight: it finishes, grelay exits 0.
/usr/bin/python3 - "$lport" "$aport" "$grelay" <<'EOF'
import os, signal, sys, time, urllib.request
import grpc
lport, aport, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
with grpc.insecure_channel("127.0.0.1:" + lport) as ch:
    call = ch.unary_unary("/test.Echo/Unary")
    reply, c = call.with_call(b"hello from the image test", timeout=10)
    md = dict(c.initial_metadata())
    assert reply == b"hello from the image test" and md.get("x-backend") == "image-backend", (reply, md)
    print("[image] a gRPC call through the image's grelay: OK, answered by", md["x-backend"])
    slow = call.future(b"in flight", timeout=20, metadata=[("x-delay-ms", "1500")])
    for _ in range(200):
        m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % aport, timeout=5).read().decode()
        if any(l.startswith("grelay_requests_in_flight{") and l.endswith(" 1") for l in m.splitlines()):
            break
        time.sleep(0.02)
    else:
        sys.exit("the slow call never showed in grelay_requests_in_flight")
    os.kill(pid, signal.SIGTERM)
    assert slow.result() == b"in flight"
    print("[image] SIGTERM with a call in flight: the call finished OK")
EOF
rc=0
wait "$runner" || rc=$?
grelay=""
grep -q "drained in .*: 1 call finished, 0 cut" "$work/grelay.err" ||
  { echo "grelay did not drain:" >&2; cat "$work/grelay.err" >&2; exit 1; }
[ "$rc" = 0 ] || { echo "grelay exited $rc after SIGTERM" >&2; exit 1; }
say "grelay drained and exited 0: $(grep -o 'drained in .*' "$work/grelay.err")"
say "image test passed"
