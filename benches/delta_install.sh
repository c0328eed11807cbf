#!/usr/bin/env bash
# Whole-process time of a delta install against a full install of the same new version from
# local disk (issue 21), on the file device (A/B), every figure beside the same run's baselines.
#
# Makes the pair itself: v1 is SIZE_MIB of pseudo-random bytes (incompressible, as firmware
# images mostly are); v2 is v1 with CHANGED_PERMILLE of its 4 KiB blocks changed in a few bytes
# each (in runs of up to 32 blocks, as rebuilt files are), and 12 KiB of new data inserted at
# 40 % of the image, so everything after it moves (the end is cut to keep the size). Both are
# packed with CHUNK-byte fixed chunks; the delta package is `pack --delta-from v1.vfp` (copied
# chunks found anywhere in v1, zstd patches, the rest carried).
#
# Then v1 is installed on a device, and each round (RUNS, commands rotated, the device file
# copied fresh from the one running v1, the host's state directory (VERIFLASH_STATE_DIR, in the
# work directory) put back as v1's install left it, and `sync` before each) times:
#   full   `veriflash flash v2-full.vfp --target file:DEV` (the package on local disk)
#   delta  `veriflash flash v2-delta.vfp --target file:DEV`
#   recorded  the same with `--source-check recorded` (the source checked against the digest
#          the device recorded at v1's install, not hashed whole)
#   reuse  `veriflash flash http://127.0.0.1:PORT/v2-full.vfp --target file:DEV` (nginx on
#          loopback; the device reuses what its active slot holds), when nginx is installed
# and the baselines: `openssl dgst -sha256 v2.img` (one SHA-256 pass over the image on one
# core) and `cp v2.img` + `sync` of the copy (the write the device does).
#
# Prints median wall ms, median CPU s (user+sys) and peak RSS of each, and every run's figures.
#
# Environment:
#   RUNS=5  SIZE_MIB=256  CHUNK=65536  CHANGED_PERMILLE=30  PORT=18083
#   BENCH_DATA=/work/bench-data   where images, packages and devices go (NOT the repository)
#   VERIFLASH=path                use this binary instead of building one
#   BEFORE=path                   also time the delta install and the online reuse with this
#                                 (older) binary, in the same rounds
#   PERF=1                        also `perf record -g` one delta install (report on stderr)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/benches/nginx.sh"
RUNS="${RUNS:-5}"
SIZE_MIB="${SIZE_MIB:-256}"
CHUNK="${CHUNK:-65536}"
CHANGED_PERMILLE="${CHANGED_PERMILLE:-30}"
PORT="${PORT:-18083}"
DATA="${BENCH_DATA:-/work/bench-data}"

[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install -y time)" >&2; exit 1; }
for tool in openssl python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
NGINX="$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)"

if [ -z "${VERIFLASH:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p veriflash-cli)
    VERIFLASH="${CARGO_TARGET_DIR:-$ROOT/target}/release/veriflash"
fi

mkdir -p "$DATA"
WORK="$(mktemp -d "$DATA/delta-install.XXXXXX")"
NGINX_PID=""
chmod 755 "$WORK"
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

echo "# delta install against a full install from local disk"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:  $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "binary:   $("$VERIFLASH" --version)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
echo "pair:     ${SIZE_MIB} MiB image, ${CHANGED_PERMILLE}‰ of 4 KiB blocks changed, 12 KiB inserted at 40 %; ${CHUNK}-byte chunks; $RUNS runs, rotated"

python3 - "$SIZE_MIB" "$CHANGED_PERMILLE" <<'PY'
import random, sys
size = int(sys.argv[1]) << 20
permille = int(sys.argv[2])
rng = random.Random(21)
v1 = b"".join(rng.randbytes(1 << 20) for _ in range(size >> 20))
open("v1.img", "wb").write(v1)
v2 = bytearray(v1)
blocks = size // 4096
want = blocks * permille // 1000
changed = set()
while len(changed) < want:
    start = rng.randrange(blocks)
    for b in range(start, min(blocks, start + rng.randrange(1, 33))):
        changed.add(b)
for b in changed:
    for _ in range(4):
        v2[b * 4096 + rng.randrange(4096)] ^= 1 + rng.randrange(255)
at = (size * 2 // 5) & ~4095
v2 = v2[:at] + rng.randbytes(12288) + v2[at:]
open("v2.img", "wb").write(bytes(v2[:size]))
PY

"$VERIFLASH" keygen --out k.pem >/dev/null
cat >layout.toml <<L
product = "p"
chipset = "c"
hardware_revision = "r1"
erase_block = 65536
write_unit = 4096
[[partition]]
name = "rootfs"
size = $((SIZE_MIB << 20))
ab = true
L
for v in 1 2; do
    printf 'product = "p"\nchipset = "c"\nversion = "%s"\nsecurity_version = %s\n[[image]]\nname = "rootfs"\npartition = "rootfs"\nfile = "v%s.img"\nchunk_size = %s\n' \
        "$v" "$v" "$v" "$CHUNK" >v$v.toml
done
"$VERIFLASH" pack --manifest v1.toml --key k.pem --out v1.vfp >/dev/null
"$VERIFLASH" pack --manifest v2.toml --key k.pem --out v2-full.vfp >/dev/null
start=$(date +%s%N)
"$VERIFLASH" pack --manifest v2.toml --key k.pem --delta-from v1.vfp --out v2-delta.vfp >/dev/null
echo "delta:    $(stat -c %s v2-delta.vfp) bytes (full package $(stat -c %s v2-full.vfp)), packed in $(( ($(date +%s%N) - start) / 1000000 )) ms"
# The host's state (the record of what each device runs, which an online install indexes
# first) lives in the work directory: each run starts from the state after v1 was installed,
# as the device does, and never from what the run before it recorded.
export VERIFLASH_STATE_DIR="$WORK/state"
"$VERIFLASH" device init --layout layout.toml file:base.img >/dev/null
"$VERIFLASH" flash v1.vfp --trust k.pub.pem --target file:base.img >/dev/null
cp -a "$VERIFLASH_STATE_DIR" state-base

commands=(full delta recorded sha cp)
[ -n "${BEFORE:-}" ] && commands+=(before)
if [ -n "$NGINX" ]; then
    mkdir -p www
    ln v2-full.vfp www/v2-full.vfp
    chmod 644 v2-full.vfp
    nginx_serve "$WORK" "$PORT"
    commands+=(reuse)
    [ -n "${BEFORE:-}" ] && commands+=(reuse_before)
fi

# run NAME: one timed run; appends "wall_ms cpu_s rss_kib" to NAME.runs.
run() {
    local cmd
    case "$1" in
        full) cmd=("$VERIFLASH" flash v2-full.vfp --trust k.pub.pem --target file:dev.img) ;;
        delta) cmd=("$VERIFLASH" flash v2-delta.vfp --trust k.pub.pem --target file:dev.img) ;;
        recorded) cmd=("$VERIFLASH" flash v2-delta.vfp --trust k.pub.pem --target file:dev.img --source-check recorded) ;;
        before) cmd=("$BEFORE" flash v2-delta.vfp --trust k.pub.pem --target file:dev.img) ;;
        reuse) cmd=("$VERIFLASH" flash "http://127.0.0.1:$PORT/v2-full.vfp" --trust k.pub.pem --target file:dev.img) ;;
        reuse_before) cmd=("$BEFORE" flash "http://127.0.0.1:$PORT/v2-full.vfp" --trust k.pub.pem --target file:dev.img) ;;
        sha) cmd=(openssl dgst -sha256 v2.img) ;;
        cp) cmd=(sh -c 'cp v2.img copy.img && sync copy.img') ;;
    esac
    case "$1" in
        full | delta | recorded | before | reuse | reuse_before)
            cp base.img dev.img
            rm -rf "$VERIFLASH_STATE_DIR" && cp -a state-base "$VERIFLASH_STATE_DIR"
            ;;
    esac
    rm -f copy.img
    sync
    local start end
    start=$(date +%s%N)
    /usr/bin/time -f '%U %S %M' -o time.out "${cmd[@]}" >last.out 2>last.err || {
        echo "failed: ${cmd[*]}" >&2
        cat last.err >&2
        exit 1
    }
    end=$(date +%s%N)
    read -r user sys rss <time.out
    echo "$(( (end - start) / 1000000 )) $(echo "$user + $sys" | bc) $((rss / 1024))" >>"$1.runs"
}

# Warm the page cache, then the rounds.
cat v1.img v2.img v2-full.vfp v2-delta.vfp base.img >/dev/null
n=${#commands[@]}
for r in $(seq 0 $((RUNS - 1))); do
    for i in $(seq 0 $((n - 1))); do
        run "${commands[$(((i + r) % n))]}"
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
full_ms=$(cut -d' ' -f1 full.runs | median)
echo
echo "| command | wall ms (median) | × full | CPU s | peak RSS MiB | runs (wall ms) |"
echo "|---|--:|--:|--:|--:|---|"
for c in "${commands[@]}"; do
    wall=$(cut -d' ' -f1 $c.runs | median)
    cpu=$(cut -d' ' -f2 $c.runs | median)
    rss=$(cut -d' ' -f3 $c.runs | median)
    case "$c" in
        full) label="\`flash v2-full.vfp\` (full, local disk)" ;;
        delta) label="\`flash v2-delta.vfp\` (delta package, local disk)" ;;
        recorded) label="\`flash v2-delta.vfp --source-check recorded\` (the device's record, not a hash pass)" ;;
        before) label="\`flash v2-delta.vfp\` with BEFORE ($("$BEFORE" --version | cut -d' ' -f1-2), the delta before)" ;;
        reuse) label="\`flash http://…/v2-full.vfp\` (online reuse, nginx on loopback)" ;;
        reuse_before) label="\`flash http://…/v2-full.vfp\` with BEFORE (online reuse before)" ;;
        sha) label="\`openssl dgst -sha256 v2.img\` (one SHA-256 pass)" ;;
        cp) label="\`cp v2.img\` + \`sync\` (one write of the image)" ;;
    esac
    printf '| %s | %s | %.2f | %s | %s | %s |\n' "$label" "$wall" \
        "$(echo "$wall / $full_ms" | bc -l)" "$cpu" "$rss" "$(cut -d' ' -f1 $c.runs | xargs)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${PERF:-0}" = 1 ]; then
    cp base.img dev.img && sync
    perf record -g -o perf.data "$VERIFLASH" flash v2-delta.vfp --trust k.pub.pem --target file:dev.img >/dev/null 2>&1
    perf report -i perf.data --no-children --percent-limit 2 --stdio 2>/dev/null | grep -v '^$' | head -80 >&2
fi
