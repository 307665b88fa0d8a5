#!/bin/sh
# Build the pinned Benthos peer (bench/peers/benthos: main.go, go.mod, go.sum) once into
# .cache/benthos/<version>/benthos (gitignored) and print the binary's path; later calls
# reuse it. Needs Go >= 1.25.2 and the Go module proxy (modules are checked against
# go.sum). Only bench/bench_peers.py uses it: tests never need Go.
#
# Usage: sh bench/peers/build-benthos.sh        (prints the path on stdout)
set -eu

VERSION=v4.60.0 # keep in step with bench/peers/benthos/go.mod
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC="$ROOT/bench/peers/benthos"
OUT="$ROOT/.cache/benthos/$VERSION"
BIN="$OUT/benthos"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "Version: $VERSION"; then
	echo "$BIN"
	exit 0
fi
if ! command -v go >/dev/null 2>&1; then
	echo "build-benthos: Go >= 1.25.2 is needed to build Benthos $VERSION (not found on PATH)" >&2
	exit 2
fi
if ! grep -q "github.com/redpanda-data/benthos/v4 $VERSION\$" "$SRC/go.mod"; then
	echo "build-benthos: $SRC/go.mod does not require benthos $VERSION" >&2
	exit 2
fi
mkdir -p "$OUT"
echo "build-benthos: building Benthos $VERSION with $(go version) (a few minutes, once)" >&2
# -mod=readonly: go.mod/go.sum are the pin; a missing or mismatched module fails the build.
(cd "$SRC" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2
echo "$BIN"
