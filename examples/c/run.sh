#!/usr/bin/env bash
# Builds examples/c/verify_and_flash.c with `gcc -Wall -Wextra -Werror` against the static and
# the shared veriflash C library, makes a key, a package, a tampered copy and file-backed
# devices with the `veriflash` CLI, and a package signed by an expired certificate with
# openssl, and checks the program's output and exit codes (the same as the CLI's for the
# trust options) — then runs it under valgrind (no definite or indirect leaks, no invalid reads
# or writes).
#
#   examples/c/run.sh            # from anywhere; honours CARGO_TARGET_DIR
#   VALGRIND=0 examples/c/run.sh # skip the valgrind runs
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

step() { printf -- '--- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

step "build the library and the CLI"
cargo build -q -p veriflash-ffi -p veriflash-cli
# Where cargo put them: CARGO_TARGET_DIR, a config, or the default target/.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || fail "cannot find cargo's target directory"
lib_dir="$target_dir/debug"
cli="$lib_dir/veriflash"
for f in "$lib_dir/libveriflash_ffi.a" "$lib_dir/libveriflash_ffi.so" "$cli"; do
  [ -f "$f" ] || fail "missing $f"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "build the example (static and shared)"
cflags=(-Wall -Wextra -Werror -std=c11 -g -I "$root/include")
gcc "${cflags[@]}" examples/c/verify_and_flash.c "$lib_dir/libveriflash_ffi.a" \
  -lpthread -ldl -lm -lrt -lutil -lgcc_s -o "$work/vf_static"
gcc "${cflags[@]}" examples/c/verify_and_flash.c -L "$lib_dir" -lveriflash_ffi \
  -Wl,-rpath,"$lib_dir" -o "$work/vf_shared"
# The shared build must really use the shared library.
# (ldd's output goes to a file first: `grep -q` would close the pipe early, and under pipefail
# ldd's SIGPIPE would fail the check.)
ldd "$work/vf_shared" > "$work/ldd.txt"
grep -q "libveriflash_ffi.so" "$work/ldd.txt" || fail "vf_shared does not load libveriflash_ffi.so"

step "make a key, a package, a tampered copy and devices with the CLI"
"$cli" keygen --out "$work/vendor.pem" >/dev/null
mkdir -p "$work/images"
head -c 300000 /dev/urandom >"$work/images/boot.img"
head -c 700000 /dev/urandom >"$work/images/rootfs.img"
cat >"$work/update.toml" <<'TOML'
product = "acme-hotspot-x1"
chipset = "mdm9607"
version = "2.4.0"
security_version = 7
chunk_size = 65536

[[image]]
name = "boot"
partition = "boot"
file = "images/boot.img"

[[image]]
name = "rootfs"
partition = "system"
file = "images/rootfs.img"
TOML
cat >"$work/layout.toml" <<'TOML'
product = "acme-hotspot-x1"
chipset = "mdm9607"
hardware_revision = "r2"
erase_block = 65536
write_unit = 4096

[[partition]]
name = "boot"
size = 1048576
ab = true

[[partition]]
name = "system"
size = 2097152
ab = true
TOML
"$cli" pack --manifest "$work/update.toml" --key "$work/vendor.pem" --out "$work/good.vfp" >/dev/null
cp "$work/good.vfp" "$work/tampered.vfp"
# Flip one payload byte, 1000 bytes before the end.
size=$(stat -c %s "$work/tampered.vfp")
offset=$((size - 1000))
byte=$(od -An -tu1 -j "$offset" -N1 "$work/tampered.vfp" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
  dd of="$work/tampered.vfp" bs=1 seek="$offset" conv=notrunc status=none
cmp -s "$work/good.vfp" "$work/tampered.vfp" && fail "the tampered copy is unchanged"

step "make a root CA and an expired code-signing certificate with openssl, and a package signed with it"
command -v openssl >/dev/null || fail "openssl is needed for the certificate cases"
pki="$work/pki"
mkdir -p "$pki"
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n' >"$pki/ca.ext"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' >"$pki/leaf.ext"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/root.key" 2>/dev/null
openssl req -new -key "$pki/root.key" -subj /CN=Root -out "$pki/root.csr"
openssl x509 -req -in "$pki/root.csr" -signkey "$pki/root.key" -extfile "$pki/ca.ext" \
  -days 30 -out "$pki/root.pem" 2>/dev/null
"$cli" keygen --out "$pki/leaf.pem" >/dev/null
openssl req -new -key "$pki/leaf.pem" -subj /CN=Leaf -out "$pki/leaf.csr"
# -days -1: the certificate expired yesterday. `pack` refuses such a chain (27) unless --force:
# this package is made expired on purpose, to see the verifiers refuse it.
openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/root.pem" -CAkey "$pki/root.key" \
  -CAcreateserial -extfile "$pki/leaf.ext" -days -1 -out "$pki/leaf.crt" 2>/dev/null
"$cli" pack --manifest "$work/update.toml" --key "$pki/leaf.pem" --cert "$pki/leaf.crt" \
  --force --out "$work/expired.vfp" >/dev/null 2>&1
cli_code=0
"$cli" verify --trust "$pki/root.pem" "$work/expired.vfp" >/dev/null 2>&1 || cli_code=$?
[ "$cli_code" = 27 ] || fail "the CLI verifies the expired package with exit $cli_code, expected 27"

new_device() {
  "$cli" device init --layout "$work/layout.toml" "file:$work/$1" >/dev/null
  echo "file:$work/$1"
}

# run NAME EXPECTED_EXIT PROGRAM ARGS...: runs, keeps stdout/stderr, checks the exit code.
run() {
  local name=$1 expected=$2
  shift 2
  local code=0
  "$@" >"$work/$name.out" 2>"$work/$name.err" || code=$?
  if [ "$code" != "$expected" ]; then
    cat "$work/$name.out" "$work/$name.err" >&2
    fail "$name: exit $code, expected $expected"
  fi
}
expect() { grep -q -- "$2" "$work/$1" || { cat "$work/$1" >&2; fail "$1 lacks '$2'"; }; }
refute() { if grep -q -- "$2" "$work/$1"; then cat "$work/$1" >&2; fail "$1 has '$2'"; fi; }

check_good() {
  local name=$1
  expect "$name.out" "verified: acme-hotspot-x1 2.4.0 (security version 7)"
  expect "$name.out" "image boot"
  expect "$name.out" "device: active slot a, anti-rollback floor 0"
  expect "$name.out" "signature  ok"
  expect "$name.out" "flash      100%  1000000/1000000 bytes"
  expect "$name.out" "commit     ok"
  expect "$name.out" "finished   ok"
  expect "$name.out" "device: active slot b, anti-rollback floor 7, installed 2.4.0"
}

check_tampered() {
  local name=$1
  expect "$name.err" "error\[30 integrity_mismatch\]: verifying the package"
  expect "$name.err" "remedy: The download is corrupted"
  refute "$name.out" "flashing"
}

for kind in static shared; do
  step "$kind: good package verifies and flashes (with a state directory and a reconnect wait)"
  target=$(new_device "dev-$kind.img")
  run "good-$kind" 0 "$work/vf_$kind" --state-dir "$work/state-$kind" --reconnect 5 \
    "$work/vendor.pub.pem" "$work/good.vfp" "$target"
  check_good "good-$kind"
  "$cli" status --target "$target" >"$work/status.txt"
  grep -Eq "active slot +b" "$work/status.txt" || fail "the CLI does not see slot b active"

  step "$kind: good package flashes from a read callback"
  target=$(new_device "dev-$kind-callback.img")
  run "callback-$kind" 0 "$work/vf_$kind" --from-callback "$work/vendor.pub.pem" \
    "$work/good.vfp" "$target"
  check_good "callback-$kind"

  step "$kind: an expired certificate is refused with code 27 (as by the CLI), accepted with --no-clock"
  target=$(new_device "dev-$kind-expired.img")
  run "expired-$kind" 27 "$work/vf_$kind" "$pki/root.pem" "$work/expired.vfp" "$target"
  expect "expired-$kind.err" "error\[27 certificate_expired\]: verifying the package"
  run "no-clock-$kind" 0 "$work/vf_$kind" --no-clock "$pki/root.pem" "$work/expired.vfp" "$target"
  check_good "no-clock-$kind"

  step "$kind: a threshold of 2 is not met by one signature: code 24"
  target=$(new_device "dev-$kind-threshold.img")
  run "threshold-$kind" 24 "$work/vf_$kind" --threshold 2 "$work/vendor.pub.pem" \
    "$work/good.vfp" "$target"
  expect "threshold-$kind.err" "error\[24 threshold_not_met\]"

  step "$kind: tampered package is refused with code 30"
  target=$(new_device "dev-$kind-tampered.img")
  run "tampered-$kind" 30 "$work/vf_$kind" "$work/vendor.pub.pem" "$work/tampered.vfp" "$target"
  check_tampered "tampered-$kind"
  "$cli" status --target "$target" >"$work/status.txt"
  grep -Eq "active slot +a" "$work/status.txt" || fail "the tampered run changed the device"

  step "$kind: a key that did not sign is refused with code 21"
  "$cli" keygen --out "$work/other-$kind.pem" >/dev/null
  run "stranger-$kind" 21 "$work/vf_$kind" "$work/other-$kind.pub.pem" "$work/good.vfp" "$target"
  expect "stranger-$kind.err" "error\[21 unknown_signer\]"

  step "$kind: usage errors"
  run "usage-$kind" 2 "$work/vf_$kind"
  run "usage-option-$kind" 2 "$work/vf_$kind" --reconnect soon "$work/vendor.pub.pem" \
    "$work/good.vfp" "$target"
  run "usage-unknown-$kind" 2 "$work/vf_$kind" --frobnicate "$work/vendor.pub.pem" \
    "$work/good.vfp" "$target"
done

if [ "${VALGRIND:-1}" != 0 ]; then
  command -v valgrind >/dev/null || {
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
  }
  # Rust's runtime keeps a few allocations for the life of the process ("still reachable")
  # and thread bookkeeping may show as "possibly lost": only definite and indirect leaks and
  # memory errors fail the run (valgrind then exits 1, which the program never does here).
  vg=(valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --error-exitcode=1)
  for kind in static shared; do
    step "valgrind, $kind: good package, with options"
    target=$(new_device "vg-$kind.img")
    run "vg-good-$kind" 0 "${vg[@]}" "$work/vf_$kind" --state-dir "$work/vg-state" \
      --config-dir "$work/vg-config" --reconnect 0 "$work/vendor.pub.pem" "$work/good.vfp" "$target"
    check_good "vg-good-$kind"
    step "valgrind, $kind: good package from a read callback"
    target=$(new_device "vg-$kind-callback.img")
    run "vg-callback-$kind" 0 "${vg[@]}" "$work/vf_$kind" --from-callback \
      "$work/vendor.pub.pem" "$work/good.vfp" "$target"
    check_good "vg-callback-$kind"
    step "valgrind, $kind: tampered package"
    target=$(new_device "vg-$kind-tampered.img")
    run "vg-tampered-$kind" 30 "${vg[@]}" "$work/vf_$kind" "$work/vendor.pub.pem" "$work/tampered.vfp" "$target"
    check_tampered "vg-tampered-$kind"
    step "valgrind, $kind: expired certificate"
    run "vg-expired-$kind" 27 "${vg[@]}" "$work/vf_$kind" "$pki/root.pem" "$work/expired.vfp" "$target"
  done
  valgrind --version
fi

step "C example: all checks passed"
