#!/usr/bin/env bash
# Installs what grelay needs from Debian 12 packages, and only what is missing.
#   scripts/install-deps.sh           build dependencies
#   scripts/install-deps.sh --demo    + what the demo backend, client and web page need
#   scripts/install-deps.sh --test    + what the tests need (cmocka, grpcio, h2, pytest, clang and
#                                       clang-format for fuzzing and the style check,
#                                       chromium for gRPC-Web in a real browser,
#                                       prometheus for promtool and the metrics tests,
#                                       h2load for the README's load line; PyYAML, strace,
#                                       systemd-analyze, groff and man for the deployment
#                                       checks, and what --image needs)
#   scripts/install-deps.sh --image   + debootstrap and buildah for scripts/image.sh
set -euo pipefail

build=(gcc libc6-dev make cmake pkg-config libnghttp2-dev libev-dev libyaml-dev libhttp-parser-dev libssl-dev libc-ares-dev)
demo=(python3-grpcio)
test=(libcmocka-dev python3-grpcio python3-h2 python3-pytest clang clang-format-14 libclang-rt-14-dev chromium dnsmasq-base prometheus nghttp2-client
      python3-yaml strace systemd groff-base man-db)
image=(debootstrap buildah)
web=()

want=("${build[@]}")
for arg in "$@"; do
  case "$arg" in
    --demo) want+=("${demo[@]}"); web=(nodejs npm) ;;
    --test) want+=("${test[@]}" "${demo[@]}" "${image[@]}"); web=(nodejs npm) ;;
    --image) want+=("${image[@]}") ;;
    *) echo "usage: $0 [--demo] [--test] [--image]" >&2; exit 2 ;;
  esac
done

# Node.js and npm (gRPC-Web pages, browser tests): Debian's, unless the
# machine already has a node on PATH.
if [ ${#web[@]} -gt 0 ] && ! command -v npm >/dev/null 2>&1; then
  want+=("${web[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

