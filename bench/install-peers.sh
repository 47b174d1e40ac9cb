#!/usr/bin/env bash
# Installs the benchmark's tools and the proxies grelay is compared with, from
# Debian 12 packages: h2load, valgrind (bench/callgrind.sh), gnuplot, nghttpx, HAProxy, nginx, Caddy,
# grpcio (the abuse bench's backend and legitimate client, bench/abuse), and Go with
# grpc-go (bench/gobackend, the grpc-go echo backend, built offline in GOPATH mode).
# Their packages would start system services; a policy-rc.d keeps them down
# for the length of the install.
set -euo pipefail
pkgs=(nghttp2-client valgrind gnuplot-nox nghttp2-proxy haproxy nginx-light caddy python3-h2 util-linux python3-grpcio
      golang-go golang-google-grpc-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
guard=/usr/sbin/policy-rc.d
placed=false
if [ ! -e "$guard" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$guard" >/dev/null
  $sudo chmod +x "$guard"
  placed=true
fi
trap '$placed && $sudo rm -f "$guard"' EXIT
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
