#!/usr/bin/env bash
# Offline delta packages (docs/FORMAT.md §3.4): what `pack --delta-from` carries for two builds
# of a binary changed in one function, against the full package, raw and compressed, with and
# without patches (`--copy-only`), by chunking; xdelta3, bsdiff and `zstd --patch-from` on the
# same pair as references; and the time of a full and a delta install on the file device.
#
# Builds the release CLI and the pair itself: libzstd.so from the zstd sources cargo already
# fetched (the zstd-sys crate), once as is and once with ZSTD_compressBound changed by two
# lines, `gcc -O2 -shared`. Needs gcc, xdelta3, bsdiff, zstd, python3, bc.
#
#   benches/delta_package.sh            # prints the table
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release -q -p veriflash-cli --manifest-path "$root/Cargo.toml"
V="$root/target/release/veriflash"
lib=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zstd-sys-*/zstd/lib | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cp -r "$lib" v1 && cp -r "$lib" v2
python3 - <<'PY'
p = 'v2/compress/zstd_compress.c'
s = open(p).read()
old = "    if (r==0) return ERROR(srcSize_wrong);\n    return r;\n}"
new = ("    if (r==0) return ERROR(srcSize_wrong);\n"
       "    if (srcSize > ((size_t)1 << 40)) return ERROR(srcSize_wrong);\n    return r + 16;\n}")
assert s.count(old) >= 1
open(p, 'w').write(s.replace(old, new, 1))
PY
for v in v1 v2; do
  (cd $v && gcc -O2 -g0 -fPIC -shared -o ../libzstd-$v.so common/*.c compress/*.c \
     decompress/*.c decompress/huf_decompress_amd64.S dictBuilder/*.c -lpthread)
done
"$V" keygen --out k.pem >/dev/null
cat > layout.toml <<L
product = "p"
chipset = "c"
hardware_revision = "r1"
erase_block = 65536
write_unit = 4096
[[partition]]
name = "lib"
size = 1048576
ab = true
L
desc() {
  printf 'product = "p"\nchipset = "c"\nversion = "%s"\nsecurity_version = %s\n[[image]]\nname = "lib"\npartition = "lib"\nfile = "libzstd-%s.so"\nchunk_size = %s\n' \
    "$1" "${1#v}" "$1" "$2"
}
size() { stat -c %s "$1"; }
payload() { "$V" inspect "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["package"]["payload_len"])'; }
both() { echo "$(size "$1")/$(payload "$1")"; }
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%F)"
echo "image: $(size libzstd-v2.so) bytes; bytes differing from v1: $(cmp -l libzstd-v1.so libzstd-v2.so | wc -l)"
echo "package bytes/payload bytes (zstd level 9 where compressed; patches at level 9)"
printf '%-14s %15s %15s %15s %15s %15s %15s\n' config full full-zstd copy+raw copy+zstd patch+raw patch+zstd
for cfg in "fixed 65536" "fixed 16384" "fixed 4096" "cdc 65536" "cdc 16384"; do
  set -- $cfg
  desc v1 "$2" > v1.toml
  desc v2 "$2" > v2.toml
  P() { "$V" pack --manifest "$1" --key k.pem --chunking "$CH" "${@:3}" --out "$2" >/dev/null; }
  CH=$1
  P v1.toml v1.vfp
  P v2.toml full.vfp
  P v2.toml fullz.vfp --compress
  P v2.toml cr.vfp --delta-from v1.vfp --copy-only
  P v2.toml cz.vfp --delta-from v1.vfp --copy-only --compress
  P v2.toml pr.vfp --delta-from v1.vfp
  P v2.toml pz.vfp --delta-from v1.vfp --compress
  printf '%-14s %15s %15s %15s %15s %15s %15s\n' "$1 $2" "$(both full.vfp)" "$(both fullz.vfp)" \
    "$(both cr.vfp)" "$(both cz.vfp)" "$(both pr.vfp)" "$(both pz.vfp)"
done
xdelta3 -e -9 -f -s libzstd-v1.so libzstd-v2.so x.vcdiff
bsdiff libzstd-v1.so libzstd-v2.so b.patch
zstd -q -19 --single-thread -f --patch-from=libzstd-v1.so libzstd-v2.so -o z.patch 2>/dev/null
echo "references: xdelta3 -9 $(size x.vcdiff), bsdiff $(size b.patch), zstd -19 --patch-from $(size z.patch)"
# Installs on the file device running v1 (the last configuration's packages).
"$V" device init --layout layout.toml file:base.img >/dev/null
"$V" flash v1.vfp --trust k.pub.pem --target file:base.img >/dev/null 2>&1
for pkg in full.vfp pz.vfp; do
  cp base.img dev.img
  s=$(date +%s.%N)
  "$V" flash $pkg --trust k.pub.pem --target file:dev.img >/dev/null 2>&1
  e=$(date +%s.%N)
  echo "flash $pkg: $(echo "$e - $s" | bc) s"
done
