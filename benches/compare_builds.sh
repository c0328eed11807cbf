#!/usr/bin/env bash
# Whole-process comparison of two veriflash builds on the three paths a change to the pipeline
# can slow down: `verify` of a package file, `flash` of it to a file-backed device (with
# read-back), and `flash URL` from a loopback HTTP server (nginx, with Range), each chunk
# verified as it arrives. Both builds run in the same session, alternating (A B, B A, ...), so
# the machine's state is the same for both; the medians and the ratio B/A are printed.
#
#   benches/compare_builds.sh OLD_BINARY NEW_BINARY
#
# Environment:
#   RUNS=5                 rounds per command (>= 3)
#   SIZE_MIB=1024          image size
#   BENCH_DATA=/work/bench-data   where the image, package and devices go (NOT the repository)
#   PORT=18081             nginx's loopback port
# Needs openssl, nginx (apt-get install nginx-light), /usr/bin/time.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/nginx.sh"

OLD="${1:?old binary}"
NEW="${2:?new binary}"
RUNS="${RUNS:-5}"
SIZE_MIB="${SIZE_MIB:-1024}"
DATA="${BENCH_DATA:-/work/bench-data}"
PORT="${PORT:-18081}"

mkdir -p "$DATA"
WORK="$(mktemp -d "$DATA/builds.XXXXXX")"
NGINX_PID=""
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "# veriflash: two builds, one session"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:  $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "A (old):  $OLD — $("$OLD" --version)"
echo "B (new):  $NEW — $("$NEW" --version)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (before the runs)"
echo "image:    $SIZE_MIB MiB, incompressible; $RUNS runs per command, alternating"
echo

cd "$WORK"
# openssl dies of SIGPIPE when head has enough: not a failure (the size is checked below).
(openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
    -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null || true) |
    head -c $((SIZE_MIB * 1024 * 1024)) >image.img
[ "$(stat -c %s image.img)" -eq $((SIZE_MIB * 1024 * 1024)) ] || { echo "image not made" >&2; exit 1; }
printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'version = "1"' 'security_version = 1' \
    '[[image]]' 'name = "system"' 'partition = "system"' 'file = "image.img"' >update.toml
"$NEW" keygen --out key.pem >/dev/null
"$NEW" pack --manifest update.toml --key key.pem --out update.vfp >/dev/null
printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'hardware_revision = "r1"' \
    'erase_block = 65536' 'write_unit = 4096' '[[partition]]' 'name = "system"' \
    "size = $(((SIZE_MIB + 1) * 1024 * 1024))" 'ab = true' >layout.toml
# Made by the older build: a newer one reads older device files, not always the other way.
"$OLD" device init --layout layout.toml file:dev.img >/dev/null

mkdir -p www
ln update.vfp www/update.vfp
chmod 644 update.vfp
nginx_serve "$WORK" "$PORT"
cat update.vfp dev.img >/dev/null # warm the page cache

# time_ms CMD...: wall milliseconds of one run (the command must succeed).
time_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>"$WORK/last.err" || { echo "failed: $*" >&2; cat "$WORK/last.err" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

declare -A times
for round in $(seq "$RUNS"); do
    if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for which in $order; do
        if [ "$which" = A ]; then bin="$OLD"; else bin="$NEW"; fi
        times[verify_$which]+="$(time_ms "$bin" verify --trust key.pub.pem update.vfp) "
        times[flash_$which]+="$(time_ms "$bin" flash update.vfp --trust key.pub.pem --target file:dev.img) "
        times[ota_$which]+="$(time_ms "$bin" flash "http://127.0.0.1:$PORT/update.vfp" --trust key.pub.pem --target file:dev.img) "
    done
done

printf '%-44s %10s %10s %8s\n' "command ($SIZE_MIB MiB image)" "A ms" "B ms" "B/A"
for cmd in verify flash ota; do
    a=$(echo "${times[${cmd}_A]}" | tr ' ' '\n' | grep . | median)
    b=$(echo "${times[${cmd}_B]}" | tr ' ' '\n' | grep . | median)
    case $cmd in
        verify) label="verify PKG" ;;
        flash) label="flash PKG --target file: (incl. read-back)" ;;
        ota) label="flash http://127.0.0.1/PKG --target file:" ;;
    esac
    printf '%-44s %10s %10s %8s\n' "$label" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')"
    echo "  runs A: ${times[${cmd}_A]}"
    echo "  runs B: ${times[${cmd}_B]}"
done
