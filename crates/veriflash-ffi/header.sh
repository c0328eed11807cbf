#!/usr/bin/env bash
# Regenerates include/veriflash.h from this crate with cbindgen (pinned version, so the output
# is stable), or with --check, fails when the committed header is stale.
#
#   crates/veriflash-ffi/header.sh          # rewrite include/veriflash.h
#   crates/veriflash-ffi/header.sh --check  # CI: regenerate to a temp file and diff
set -euo pipefail
cd "$(dirname "$0")/../.."

CBINDGEN_VERSION=0.29.4
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
  cargo install --locked --quiet cbindgen --version "$CBINDGEN_VERSION"
fi

generate() {
  cbindgen --quiet --config crates/veriflash-ffi/cbindgen.toml --crate veriflash-ffi \
    --output "$1" crates/veriflash-ffi
}

if [ "${1:-}" = "--check" ]; then
  fresh=$(mktemp)
  trap 'rm -f "$fresh"' EXIT
  generate "$fresh"
  if ! diff -u include/veriflash.h "$fresh"; then
    echo "include/veriflash.h is stale: run crates/veriflash-ffi/header.sh and commit it" >&2
    exit 1
  fi
  echo "include/veriflash.h is up to date"
else
  generate include/veriflash.h
fi
