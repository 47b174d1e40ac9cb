#!/usr/bin/env bash
# Installs what grelay needs from Debian 12 packages, and only what is missing.
#   scripts/install-deps.sh           build dependencies
#   scripts/install-deps.sh --demo    + what the demo backend and client need
#   scripts/install-deps.sh --test    + what the tests need (cmocka, grpcio, h2, pytest, clang for fuzzing)
set -euo pipefail

build=(gcc make cmake pkg-config libnghttp2-dev libev-dev libyaml-dev libhttp-parser-dev)
demo=(python3-grpcio)
test=(libcmocka-dev python3-grpcio python3-h2 python3-pytest clang libclang-rt-14-dev)

want=("${build[@]}")
for arg in "$@"; do
  case "$arg" in
    --demo) want+=("${demo[@]}") ;;
    --test) want+=("${test[@]}" "${demo[@]}") ;;
    *) echo "usage: $0 [--demo] [--test]" >&2; exit 2 ;;
  esac
done

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
