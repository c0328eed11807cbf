#!/usr/bin/env bash
# Regenerates the package test vectors of docs/FORMAT.md §10 in this directory from the test
# keys in keys/ (deterministic: the same keys give the same bytes). Run from anywhere; commit
# what changes. crates/veriflash-core/tests/vectors.rs fails until the committed files are
# what this writes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
exec cargo run -q -p veriflash-test-support --example gen_test_vectors -- "$here"
