#!/usr/bin/env bash
# Builds the grpc-go echo backend offline from Debian's packages (golang-go,
# golang-google-grpc-dev; bench/install-peers.sh installs them) in GOPATH
# mode: no module download, no vendor tree.
#   bench/gobackend/build.sh OUTDIR     writes OUTDIR/gobackend
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=$(cd "$(dirname "$0")" && pwd)
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOCACHE=${GOCACHE:-/tmp/grelay-gocache}
cd "$src"
go build -o "$out/gobackend" main.go
