#!/usr/bin/env bash
# Delta updates against the tools issue 21 names: for image pairs that look like real point
# releases, the bytes a device must download to go from v1 to v2, and the wall time to prepare
# the update (server side) and to install it (device side), for veriflash (fixed and
# content-defined chunks, measured for real: v1 installed on a file device, v2 flashed from
# nginx on loopback, bytes read from `flash --json`), casync, zchunk, xdelta3 and bsdiff.
# Prints a Markdown table for docs/PERFORMANCE.md on stdout; progress goes to stderr.
#
#   benches/delta/run.sh
#
# The pairs, built here from packages of a registry (PyPI wheels, downloaded once into DATA):
#   ext4      a root file system (`mkfs.ext4 -d`, deterministic) of ~30 Python packages, five of
#             which move one version between v1 and v2;
#   squashfs  the same two trees as squashfs (gzip, 128 KiB blocks: compressed, the hard case
#             for fixed chunks);
#   kernel    a large generated C program built twice with gcc -O2, one function's body
#             changed (every later function moves, as in a kernel point release).
#
# Environment:
#   BENCH_DATA=/work/bench-data  where wheels and the pairs' images are kept between runs, and
#                                each run's packages go (NOT the repository); delete
#                                BENCH_DATA/delta/images to rebuild the images
#   PAIRS="ext4 squashfs kernel"
#   TOOLS="veriflash delta casync zchunk xdelta3 bsdiff"   the rows to measure
#   FIXED_CHUNK=65536            veriflash fixed chunk size
#   CDC_MAX=262144               veriflash largest content-defined chunk (about 32 KiB average)
#   DELTA_CHUNK=1048576          the larger fixed chunk size the delta package rows also try
#   KERNEL_FUNCS=6000            functions in the generated program
#   BSDIFF_TIMEOUT=600           seconds bsdiff may take per pair
#   PORT=18082                   nginx's loopback port
#   VERIFLASH=                   a veriflash binary to use instead of building one
# Needs (Debian): casync zchunk xdelta3 bsdiff squashfs-tools e2fsprogs nginx-light gcc
# python3 pip unzip curl; network for the first run only (pip download).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/benches/nginx.sh"
DATA="${BENCH_DATA:-/work/bench-data}/delta"
PAIRS="${PAIRS:-ext4 squashfs kernel}"
TOOLS="${TOOLS:-veriflash delta casync zchunk xdelta3 bsdiff}"
FIXED_CHUNK="${FIXED_CHUNK:-65536}"
CDC_MAX="${CDC_MAX:-262144}"
DELTA_CHUNK="${DELTA_CHUNK:-1048576}"
KERNEL_FUNCS="${KERNEL_FUNCS:-6000}"
PORT="${PORT:-18082}"
BSDIFF_TIMEOUT="${BSDIFF_TIMEOUT:-600}"
FAKE_TIME=1700000000

for tool in casync zck zck_delta_size zckdl xdelta3 bsdiff bspatch mksquashfs mkfs.ext4 gcc \
    python3 pip unzip curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"

log() { printf '%s\n' "$*" >&2; }

if [ -z "${VERIFLASH:-}" ]; then
    log "building veriflash (release)"
    cargo build -q --release -p veriflash-cli --manifest-path "$ROOT/Cargo.toml"
    VERIFLASH="$(cargo metadata -q --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/veriflash"
fi
VERIFLASH="$(realpath "$VERIFLASH")"

mkdir -p "$DATA/wheels"
WORK="$(mktemp -d "$DATA/run.XXXXXX")"
NGINX_PID=""
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

# ---------------------------------------------------------------------------------------------
# The trees: name, version in v1, version in v2 (five packages move one release).
PACKAGES='
certifi 2024.2.2 2024.6.2
idna 3.6 3.7
urllib3 2.2.1 2.2.2
requests 2.32.2 2.32.3
setuptools 69.5.1 70.0.0
charset-normalizer 3.3.2 3.3.2
six 1.16.0 1.16.0
attrs 23.2.0 23.2.0
click 8.1.7 8.1.7
jinja2 3.1.4 3.1.4
markupsafe 2.1.5 2.1.5
pyyaml 6.0.1 6.0.1
packaging 24.0 24.0
pyparsing 3.1.2 3.1.2
pip 24.0 24.0
wheel 0.43.0 0.43.0
docutils 0.21.2 0.21.2
pygments 2.18.0 2.18.0
babel 2.15.0 2.15.0
rich 13.7.1 13.7.1
typing-extensions 4.11.0 4.11.0
pytz 2024.1 2024.1
python-dateutil 2.9.0.post0 2.9.0.post0
tzdata 2024.1 2024.1
tomli 2.0.1 2.0.1
more-itertools 10.2.0 10.2.0
zipp 3.18.1 3.18.1
pluggy 1.5.0 1.5.0
pytest 8.2.0 8.2.0
iniconfig 2.0.0 2.0.0
numpy 1.26.4 1.26.4
sqlalchemy 2.0.30 2.0.30
'

# wheel NAME VERSION: the wheel's path, downloaded from PyPI the first time (CPython 3.11,
# manylinux x86_64, so the trees are the same whatever Python runs this script).
wheel() {
    local dir="$DATA/wheels/$1-$2"
    if ! ls "$dir"/*.whl >/dev/null 2>&1; then
        log "pip download $1==$2"
        pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
            --python-version 3.11 --implementation cp --abi cp311 -d "$dir" "$1==$2" >&2
    fi
    ls "$dir"/*.whl
}

# tree COLUMN DIR: the root file system of release COLUMN (1 or 2) in DIR, every time stamp fixed.
tree() {
    local column="$1" dir="$2" site="$2/usr/lib/python3.11/site-packages"
    rm -rf "$dir"
    mkdir -p "$site" "$dir/etc"
    printf 'NAME="bench"\nVERSION_ID="1.%s"\n' "$column" >"$dir/etc/os-release"
    while read -r name v1 v2; do
        [ -n "$name" ] || continue
        if [ "$column" = 1 ]; then version="$v1"; else version="$v2"; fi
        unzip -q -o "$(wheel "$name" "$version")" -d "$site"
    done <<<"$PACKAGES"
    find "$dir" -exec touch -h -d "@$FAKE_TIME" {} +
}

# ---------------------------------------------------------------------------------------------
# The kernel-like program: KERNEL_FUNCS functions of mixed arithmetic and branches, all reached
# through one table; release 2 adds one statement to the body of the middle function.
kernel_source() {
    python3 - "$KERNEL_FUNCS" "$1" <<'EOF'
import random, sys
n, release = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(21)
out = ["#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>"]
out += [f"uint64_t f{i}(uint64_t x, uint64_t y);" for i in range(n)]
for i in range(n):
    body = []
    for _ in range(rng.randint(4, 14)):
        a, b, c = rng.getrandbits(32), rng.randint(1, 31), rng.randrange(n)
        body.append(rng.choice([
            f"x = (x * {a}u) ^ (y >> {b});",
            f"if ((x & {a}u) == {b}u) y += f{c}(x, y >> 1);",
            f"y = (y << {b}) | (x >> {64 - b}); x += {a}u;",
            f"switch (x % 5) {{ case 0: y ^= {a}u; break; case 1: x -= y; break; case 3: y += {b}; break; default: x ^= {a}u; }}",
            f'if (x == {a}u) printf("f{i}: %llu\\n", (unsigned long long)y);',
        ]))
    if release == 2 and i == n // 2:
        body.append("y ^= x >> 7;")
    out.append(f"uint64_t f{i}(uint64_t x, uint64_t y) {{ if (y == 0) return x; y--; "
               + " ".join(body) + " return x ^ y; }")
out.append("uint64_t (*const table[])(uint64_t, uint64_t) = {"
           + ", ".join(f"f{i}" for i in range(n)) + "};")
out.append("int main(int argc, char **argv) { uint64_t x = argc > 1 ? strtoull(argv[1], 0, 0) : 1; "
           f"for (unsigned i = 0; i < {n}; i++) x = table[i](x, 3); printf(\"%llu\\n\", (unsigned long long)x); return 0; }}")
print("\n".join(out))
EOF
}

# fix_ctimes IMAGE: `mkfs.ext4 -d` copies each file's ctime, which no one can set (it is when
# the tree was written), so every inode would differ between two builds of the same tree.
# A reproducible build pins it, as it pins the other times: every inode in use gets FAKE_TIME.
fix_ctimes() {
    local used
    used=$(dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Inode count/ { n = $2 } /^Free inodes/ { f = $2 } END { print n - f }')
    # mkfs -d allocates inodes in order, from the first after the reserved ones (11).
    seq 2 $((used + 1)) | awk -v t="$FAKE_TIME" '$1 == 2 || $1 >= 11 { print "sif <" $1 "> ctime @" t }' >ctimes.cmd
    debugfs -w -f ctimes.cmd "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# Images: PAIR/v1.img and PAIR/v2.img, built once into DATA/images (the builds are
# deterministic, so a later run measures the same pair) and linked into the run.
make_images() {
    local pair="$1"
    mkdir -p "$pair"
    if [ -f "$DATA/images/$pair/v2.img" ]; then
        ln -f "$DATA/images/$pair/v1.img" "$DATA/images/$pair/v2.img" "$pair/"
        return
    fi
    build_images "$pair"
    mkdir -p "$DATA/images/$pair"
    ln -f "$pair/v1.img" "$pair/v2.img" "$DATA/images/$pair/"
}

build_images() {
    local pair="$1"
    case "$pair" in
        ext4)
            [ -d tree1 ] || { tree 1 tree1; tree 2 tree2; }
            # One size for both releases, as a partition has: the larger tree plus a quarter.
            local mib
            mib=$(du -sm tree1 tree2 | awk '{ if ($1 > m) m = $1 } END { print int(m * 1.25) + 16 }')
            for r in 1 2; do
                E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -b 4096 -L rootfs \
                    -U 6f1c2a4e-0d2b-4d1e-9a77-2b1f0c3d4e5f \
                    -E hash_seed=2c6e1f0a-5b3d-4c2e-8f19-7a0b1c2d3e4f,root_owner=0:0 \
                    -d "tree$r" "$pair/v$r.img" "${mib}M" >&2
                fix_ctimes "$pair/v$r.img"
            done
            ;;
        squashfs)
            [ -d tree1 ] || { tree 1 tree1; tree 2 tree2; }
            for r in 1 2; do
                mksquashfs "tree$r" "$pair/v$r.img" -noappend -quiet -no-progress -all-root \
                    -mkfs-time "$FAKE_TIME" -all-time "$FAKE_TIME" >/dev/null
            done
            ;;
        kernel)
            for r in 1 2; do
                kernel_source "$r" >"$pair/v$r.c"
                gcc -O2 -g0 -o "$pair/v$r.img" "$pair/v$r.c"
            done
            ;;
    esac
}

# ---------------------------------------------------------------------------------------------
"$VERIFLASH" keygen --out key.pem >/dev/null
nginx_serve "$WORK" "$PORT" body
URL="http://127.0.0.1:$PORT"

# Wall seconds of one run of a command (which must succeed), in $SECS.
timed() {
    local start end
    start=$(date +%s%N)
    "$@" >"$WORK/last.out" 2>"$WORK/last.err" || {
        echo "failed: $*" >&2
        cat "$WORK/last.err" >&2
        exit 1
    }
    end=$(date +%s%N)
    SECS=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')
}

size() { stat -c %s "$1"; }

# served CMD...: runs CMD (timed) and sets $SERVED to the body bytes nginx sent meanwhile: what
# the download really cost on the wire (Range and multipart framing included, headers not).
served() {
    local before
    before=$(wc -l <nginx/access.log)
    timed "$@"
    SERVED=$(tail -n +$((before + 1)) nginx/access.log | awk '{ s += $2 } END { print s + 0 }')
}

ROWS=()
# row PAIR METHOD BYTES FULL PREPARE_S INSTALL_S
row() {
    local pct
    pct=$(awk -v b="$3" -v f="$4" 'BEGIN { printf "%.1f", 100 * b / f }')
    ROWS+=("| $1 | $2 | $3 | $pct % | $5 | $6 |")
    log "  $2: $3 bytes ($pct %), prepare $5 s, install $6 s"
}

# package PAIR RELEASE MODE CHUNK: PAIR/vRELEASE-MODE.vfp (MODE: fixed, cdc, or cdc-zstd:
# content-defined chunks, each stored zstd-compressed where that saves 1/32 of it); the pack's
# wall time in $SECS.
package() {
    local pair="$1" r="$2" mode="$3" chunk="$4" options=(--chunking "${3%-zstd}")
    [ "$mode" != cdc-zstd ] || options+=(--compress)
    printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' "version = \"1.$r\"" \
        "security_version = $r" "chunk_size = $chunk" '[[image]]' 'name = "rootfs"' \
        'partition = "rootfs"' "file = \"v$r.img\"" >"$pair/v$r-$mode.toml"
    timed "$VERIFLASH" pack --manifest "$pair/v$r-$mode.toml" --key key.pem "${options[@]}" \
        --out "$pair/v$r-$mode.vfp"
}

# device PAIR MODE: a file device running v1 (installed from the local package), its own state.
device() {
    local pair="$1" mode="$2" part
    part=$(($(size "$pair/v1.img") > $(size "$pair/v2.img") ? $(size "$pair/v1.img") : $(size "$pair/v2.img")))
    part=$(((part + (1 << 20) - 1) / (1 << 20) * (1 << 20)))
    printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'hardware_revision = "r1"' \
        'erase_block = 65536' 'write_unit = 4096' '[[partition]]' 'name = "rootfs"' \
        "size = $part" 'ab = true' >"$pair/layout.toml"
    rm -rf "$pair/dev-$mode.img" "$pair/state-$mode"
    "$VERIFLASH" device init --layout "$pair/layout.toml" "file:$pair/dev-$mode.img" >/dev/null
    VERIFLASH_STATE_DIR="$pair/state-$mode" "$VERIFLASH" flash "$pair/v1-$mode.vfp" \
        --trust key.pub.pem --target "file:$pair/dev-$mode.img" >/dev/null 2>&1
}

# The bytes a `flash --json` run fetched (its result's download counts).
fetched() {
    python3 -c '
import json, sys
fetched = None
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    download = event.get("download") if isinstance(event, dict) else None
    if isinstance(download, dict) and "bytes_fetched" in download:
        fetched = download["bytes_fetched"]
print(fetched)' "$1"
}

veriflash_rows() {
    local pair="$1" full="$2" mode chunk label
    for mode in fixed cdc cdc-zstd; do
        case $mode in
            fixed)
                chunk=$FIXED_CHUNK
                label="veriflash, fixed $((FIXED_CHUNK >> 10)) KiB chunks"
                ;;
            cdc)
                chunk=$CDC_MAX
                label="veriflash, content-defined chunks (≤ $((CDC_MAX >> 10)) KiB)"
                ;;
            cdc-zstd)
                chunk=$CDC_MAX
                label="veriflash, content-defined chunks + --compress (only raw chunks are reused)"
                ;;
        esac
        package "$pair" 1 "$mode" "$chunk"
        package "$pair" 2 "$mode" "$chunk"
        local pack_s=$SECS
        ln -f "$pair/v2-$mode.vfp" "www/$pair-v2-$mode.vfp"
        chmod 644 "www/$pair-v2-$mode.vfp"
        device "$pair" "$mode"
        VERIFLASH_STATE_DIR="$pair/state-$mode" served "$VERIFLASH" flash \
            "$URL/$pair-v2-$mode.vfp" --trust key.pub.pem --target "file:$pair/dev-$mode.img" --json
        # The payload bytes the flash says it fetched; nginx also sent the signed prefix.
        log "  flash --json: bytes_fetched $(fetched "$WORK/last.out") (payload only)"
        row "$pair" "$label" "$SERVED" "$full" "$pack_s" "$SECS"
        if [ "$mode" = fixed ]; then
            # What a delta install is measured against: the full package from local disk.
            device "$pair" "$mode"
            VERIFLASH_STATE_DIR="$pair/state-$mode" timed "$VERIFLASH" flash "$pair/v2-$mode.vfp" \
                --trust key.pub.pem --target "file:$pair/dev-$mode.img" --json
            row "$pair" "veriflash full package, installed from local disk" "$(size "$pair/v2-$mode.vfp")" \
                "$full" "$pack_s" "$SECS"
        fi
    done
}

# >>> veriflash delta package (pack --delta-from, zstd patch): offline delta packages, made
# against the v1 package (fixed chunks of FIXED_CHUNK and of DELTA_CHUNK, content-defined
# chunks of at most CDC_MAX), chunks the old image holds copied, changed ones as zstd patches
# against the old range their anchors point to. A delta package's chunk size is its own (the
# device rebuilds it from its installed image, not from v1's chunks), and each chunk costs 85
# bytes of signed tables, so the delta rows also try larger chunks. The bytes to transfer are
# the delta package's size; install is a local flash on a device running v1.
delta_package_rows() {
    local pair="$1" full="$2" mode chunk label
    for mode in fixed cdc; do
        [ -f "$pair/v1-$mode.vfp" ] || package "$pair" 1 "$mode" "$([ $mode = fixed ] && echo "$FIXED_CHUNK" || echo "$CDC_MAX")"
    done
    for variant in "fixed $FIXED_CHUNK" "fixed $DELTA_CHUNK" "cdc $CDC_MAX"; do
        read -r mode chunk <<<"$variant"
        printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'version = "1.2"' \
            'security_version = 2' "chunk_size = $chunk" '[[image]]' 'name = "rootfs"' \
            'partition = "rootfs"' 'file = "v2.img"' >"$pair/v2-delta.toml"
        if [ "$mode" = fixed ]; then
            label="veriflash delta package (pack --delta-from, zstd patch), fixed $((chunk >> 10)) KiB chunks"
        else
            label="veriflash delta package (pack --delta-from, zstd patch), content-defined chunks (≤ $((chunk >> 10)) KiB)"
        fi
        timed "$VERIFLASH" pack --manifest "$pair/v2-delta.toml" --key key.pem \
            --chunking "$mode" --delta-from "$pair/v1-$mode.vfp" --out "$pair/v2-delta.vfp"
        local pack_s=$SECS
        device "$pair" "$mode"
        VERIFLASH_STATE_DIR="$pair/state-$mode" timed "$VERIFLASH" flash "$pair/v2-delta.vfp" \
            --trust key.pub.pem --target "file:$pair/dev-$mode.img"
        # (The flash compared the device's read-back with v2's signed digest before committing.)
        row "$pair" "$label" "$(size "$pair/v2-delta.vfp")" "$full" "$pack_s" "$SECS"
    done
}
# <<< veriflash delta package

casync_row() {
    local pair="$1" full="$2"
    mkdir -p "www/$pair-casync"
    casync make --store="$pair/old.castr" "$pair/v1.caibx" "$pair/v1.img" >/dev/null
    timed casync make --store="www/$pair-casync/new.castr" "www/$pair-casync/v2.caibx" "$pair/v2.img"
    local make_s=$SECS
    chmod -R a+rX "www/$pair-casync"
    # What casync fetches: the index, and each chunk of the new store the old one lacks.
    local bytes index_bytes
    index_bytes=$(size "www/$pair-casync/v2.caibx")
    bytes=$(cd "www/$pair-casync/new.castr" && find . -type f -name '*.cacnk' | while read -r f; do
        [ -e "$WORK/$pair/old.castr/$f" ] || stat -c %s "$f"
    done | awk -v index_bytes="$index_bytes" '{ s += $1 } END { print s + index_bytes }')
    rm -f "$pair/casync-out.img"
    served casync extract --seed="$pair/v1.img" --store="$URL/$pair-casync/new.castr" \
        "$URL/$pair-casync/v2.caibx" "$pair/casync-out.img"
    cmp -s "$pair/casync-out.img" "$pair/v2.img" || { echo "casync extract differs" >&2; exit 1; }
    log "  casync: index + chunks the old store lacks: $bytes bytes"
    row "$pair" "casync (default chunks, avg 64 KiB)" "$SERVED" "$full" "$make_s" "$SECS"
}

zchunk_row() {
    local pair="$1" full="$2"
    zck -o "$pair/v1.zck" "$pair/v1.img" >/dev/null
    timed zck -o "www/$pair-v2.zck" "$pair/v2.img"
    local make_s=$SECS
    chmod 644 "www/$pair-v2.zck"
    # "Would download N of M bytes": the header and the chunks v1.zck lacks.
    local bytes
    bytes=$(zck_delta_size "$pair/v1.zck" "www/$pair-v2.zck" | awk '/^Would download/ { print $3 }')
    rm -f "$pair-v2.zck"
    served zckdl -q -s "$pair/v1.zck" "$URL/$pair-v2.zck"
    cmp -s "$pair-v2.zck" "www/$pair-v2.zck" || { echo "zckdl output differs" >&2; exit 1; }
    rm -f "$pair-v2.zck"
    log "  zck_delta_size: $bytes bytes"
    row "$pair" "zchunk (zck defaults)" "$SERVED" "$full" "$make_s" "$SECS"
}

xdelta3_row() {
    local pair="$1" full="$2" window
    # The source window holds the whole old image, so xdelta3 finds every match (its best case).
    window=$(($(size "$pair/v1.img") + (1 << 20)))
    timed xdelta3 -e -9 -f -B "$window" -s "$pair/v1.img" "$pair/v2.img" "$pair/v2.xd3"
    local make_s=$SECS
    timed xdelta3 -d -f -B "$window" -s "$pair/v1.img" "$pair/v2.xd3" "$pair/xd3-out.img"
    cmp -s "$pair/xd3-out.img" "$pair/v2.img" || { echo "xdelta3 output differs" >&2; exit 1; }
    row "$pair" "xdelta3 -e -9 (source window = image)" "$(size "$pair/v2.xd3")" "$full" "$make_s" "$SECS"
}

bsdiff_row() {
    local pair="$1" full="$2" start
    # bsdiff's suffix sort crawls over long runs of equal bytes (the free space of a file
    # system): it gets BSDIFF_TIMEOUT seconds.
    start=$(date +%s%N)
    if ! timeout "$BSDIFF_TIMEOUT" bsdiff "$pair/v1.img" "$pair/v2.img" "$pair/v2.bsdiff"; then
        [ $(($(date +%s%N) - start)) -ge $((BSDIFF_TIMEOUT * 1000000000)) ] ||
            { echo "bsdiff failed" >&2; exit 1; }
        ROWS+=("| $pair | bsdiff | not finished in $BSDIFF_TIMEOUT s | | > $BSDIFF_TIMEOUT | |")
        log "  bsdiff: not finished in $BSDIFF_TIMEOUT s"
        return
    fi
    local make_s
    make_s=$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')
    timed bspatch "$pair/v1.img" "$pair/bs-out.img" "$pair/v2.bsdiff"
    cmp -s "$pair/bs-out.img" "$pair/v2.img" || { echo "bspatch output differs" >&2; exit 1; }
    row "$pair" "bsdiff" "$(size "$pair/v2.bsdiff")" "$full" "$make_s" "$SECS"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load before: $LOAD_BEFORE"
START_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
for pair in $PAIRS; do
    log "== $pair"
    make_images "$pair"
    log "  v1 $(size "$pair/v1.img") bytes, v2 $(size "$pair/v2.img") bytes"
    # "Full" is the v2 image: what a device downloads without any delta (the fixed-chunk package
    # is a few KiB more: its signed manifest).
    full=$(size "$pair/v2.img")
    for tool in $TOOLS; do
        case $tool in
            veriflash) veriflash_rows "$pair" "$full" ;;
            delta) delta_package_rows "$pair" "$full" ;;
            *) "${tool}_row" "$pair" "$full" ;;
        esac
    done
done

echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
    "$(free -g | awk '/^Mem:/ {print $2}') GiB RAM; $START_DATE; load average $LOAD_BEFORE before," \
    "$(cut -d' ' -f1-3 /proc/loadavg) after (1, 5, 15 min)."
echo "veriflash: $("$VERIFLASH" --version); $(casync --version | head -1); zchunk $(zck --version 2>&1 | head -1);" \
    "$(xdelta3 -V 2>&1 | head -1); bsdiff (Debian $(dpkg-query -W -f '${Version}' bsdiff))."
echo
echo "| pair | method | bytes to transfer | of the v2 image | prepare s | install s |"
echo "|---|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
