#!/usr/bin/env bash
# The mesh in a box (docs/mesh.md): an edge grelay, service A with its
# inbound and outbound sidecars, three replicas of service B behind their
# inbound sidecars (mTLS, found by strict_dns from a dnsmasq, health checked)
# and a Prometheus, all on loopback addresses 127.0.1.x of this machine. It
# prints what runs where (the live views' and Prometheus' URLs), puts load on
# it, then walks through deadlines, a rolling restart, a ConfigMap change and
# a replica killed, saying what each did.
#   scripts/mesh.sh          run, then keep the mesh up until Ctrl-C
#   scripts/mesh.sh --once   run the steps and stop (exit 1 if one went wrong)
# GRELAY_BIN=path uses that grelay instead of building build/grelay.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh # what the build needs
# what the mesh needs: grpcio for the services and clients, dnsmasq,
# Prometheus, openssl for the certificates, pytest (the test modules it
# reuses import it)
missing=()
for p in python3-grpcio dnsmasq-base prometheus openssl python3-pytest; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${GRELAY_BIN:-}" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRELAY_TESTS=OFF >/dev/null
  cmake --build build -j"$(nproc)" >/dev/null
  export GRELAY_BIN=$PWD/build/grelay
fi
exec /usr/bin/python3 tests/integration/mesh.py "$@"
