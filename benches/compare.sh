#!/usr/bin/env bash
# Whole-process comparison: `veriflash verify` vs `openssl dgst -sha256` vs `sha256sum`.
#
# Builds the release CLI, makes one package with a 1 GiB image and one with a 4 GiB image
# (incompressible AES-CTR keystream, not sparse), warms the page cache, then times each command
# RUNS times, alternating the commands within every round (A B C D, B C D A, ...), and prints the
# median wall time, the ratio to openssl, median CPU time (user+sys) and peak RSS
# (`/usr/bin/time -v`'s "Maximum resident set size"). Also times the refusal of a 1 GiB package
# whose manifest has one flipped byte. Everything it makes is deleted at the end.
#
# Environment:
#   RUNS=5                 rounds per size (>= 5)
#   SIZES="1 4"            image sizes in GiB
#   BENCH_DATA=/work/bench-data   where the images and packages go (NOT the repository)
#   CARGO_TARGET_DIR       honoured; default: <repo>/target
#   VERIFLASH=path         use this binary instead of building one
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-5}"
SIZES="${SIZES:-1 4}"
DATA="${BENCH_DATA:-/work/bench-data}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install -y time)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 1; }

if [ -z "${VERIFLASH:-}" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p veriflash-cli)
    VERIFLASH="$TARGET/release/veriflash"
fi

mkdir -p "$DATA"
WORK="$(mktemp -d "$DATA/compare.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

need_gib=0
for s in $SIZES; do need_gib=$((need_gib + 2 * s)); done
need_gib=$((need_gib + 1)) # the tampered 1 GiB copy
avail_kib="$(df -Pk "$DATA" | awk 'NR==2 {print $4}')"
if [ "$avail_kib" -lt $((need_gib * 1024 * 1024 + 1024 * 1024)) ]; then
    echo "not enough space in $DATA: need ~${need_gib} GiB" >&2
    exit 1
fi

echo "# veriflash whole-process comparison"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:  $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
echo "binary:   $("$VERIFLASH" --version)"
echo "openssl:  $(openssl version)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
echo "runs:     $RUNS per command, alternating"
echo

"$VERIFLASH" keygen --out "$WORK/key.pem" >/dev/null

# make_image FILE GIB: incompressible bytes, fast (AES-CTR keystream of zeros).
make_image() {
    openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
        -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null |
        head -c "$(($2 * 1024 * 1024 * 1024))" >"$1" || true # openssl dies of SIGPIPE: expected
    [ "$(stat -c %s "$1")" -eq $(($2 * 1024 * 1024 * 1024)) ] || { echo "short image $1" >&2; exit 1; }
}

# make_package GIB: image.GIB and pkg.GIB.vfp in $WORK.
make_package() {
    local g="$1"
    make_image "$WORK/image.$g" "$g"
    cat >"$WORK/pkg.$g.toml" <<EOF
product = "bench"
chipset = "mdm9607"
version = "1.0.0"
security_version = 1

[[image]]
name = "rootfs"
partition = "system"
file = "image.$g"
EOF
    "$VERIFLASH" pack --manifest "$WORK/pkg.$g.toml" --key "$WORK/key.pem" \
        --out "$WORK/pkg.$g.vfp" >/dev/null
}

# measure NAME CMD...: runs CMD once, appends "wall_ms cpu_s rss_kib status" to $WORK/NAME.txt.
measure() {
    local name="$1"
    shift
    local t0 t1 status=0
    t0="$(date +%s%N)"
    /usr/bin/time -v -o "$WORK/time.out" "$@" >/dev/null 2>"$WORK/stderr.out" || status=$?
    t1="$(date +%s%N)"
    local rss user sys
    rss="$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$WORK/time.out")"
    user="$(sed -n 's/^\s*User time (seconds): //p' "$WORK/time.out")"
    sys="$(sed -n 's/^\s*System time (seconds): //p' "$WORK/time.out")"
    # /usr/bin/time -v reports a non-zero exit as "Command exited with non-zero status N".
    status="$(sed -n 's/^Command exited with non-zero status //p' "$WORK/time.out")"
    echo "$(((t1 - t0) / 1000000)) $(echo "$user + $sys" | bc -l) $rss ${status:-0}" >>"$WORK/$name.txt"
}

median() { # column of $WORK/NAME.txt
    sort -n -k"$2" "$WORK/$1.txt" | awk -v c="$2" '{v[NR]=$c} END {m=int((NR+1)/2); if (NR%2) print v[m]; else print (v[m]+v[m+1])/2}'
}

report_row() { # NAME LABEL OPENSSL_MS
    local wall cpu rss status
    wall="$(median "$1" 1)"
    cpu="$(median "$1" 2)"
    rss="$(sort -n -k3 "$WORK/$1.txt" | tail -1 | awk '{print $3}')"
    status="$(awk '{print $4}' "$WORK/$1.txt" | sort -u | tr '\n' ' ')"
    printf '| %-36s | %8s | %8.2f | %6.2f | %7.1f | %s|\n' "$2" "$wall" \
        "$(echo "scale=2; $wall / $3" | bc -l)" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$status"
}

for g in $SIZES; do
    make_package "$g"
    IMG="$WORK/image.$g"
    PKG="$WORK/pkg.$g.vfp"
    if [ "$g" = 1 ]; then
        cp "$PKG" "$WORK/tampered.vfp"
        # Flip one byte inside the manifest (the header is 32 bytes).
        printf '\xff' | dd of="$WORK/tampered.vfp" bs=1 seek=100 conv=notrunc status=none
    fi
    sync
    # Warm the page cache with everything this size's runs read.
    cat "$IMG" "$PKG" >/dev/null
    [ "$g" = 1 ] && cat "$WORK/tampered.vfp" >/dev/null
    cached="$(free -g | awk '/^Mem:/ {print $6}')"

    cmds=(verify_default verify_t1 openssl sha256sum)
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < ${#cmds[@]}; i++)); do
            c="${cmds[$(((i + r) % ${#cmds[@]}))]}"
            case "$c" in
            verify_default) measure "v$g" "$VERIFLASH" verify --trust "$WORK/key.pub.pem" "$PKG" ;;
            verify_t1) measure "v1_$g" "$VERIFLASH" verify --threads 1 --trust "$WORK/key.pub.pem" "$PKG" ;;
            openssl) measure "o$g" openssl dgst -sha256 "$IMG" ;;
            sha256sum) measure "s$g" sha256sum "$IMG" ;;
            esac
        done
        [ "$g" = 1 ] && measure tampered "$VERIFLASH" verify --trust "$WORK/key.pub.pem" "$WORK/tampered.vfp"
    done

    o="$(median "o$g" 1)"
    echo "## ${g} GiB image (page cache: ${cached} GiB buff/cache after warming)"
    echo
    echo "| command                              | wall ms  | ×openssl | CPU s  | RSS MiB | exit |"
    echo "|--------------------------------------|---------:|---------:|-------:|--------:|------|"
    report_row "v$g" "veriflash verify (default threads)" "$o"
    report_row "v1_$g" "veriflash verify --threads 1" "$o"
    report_row "o$g" "openssl dgst -sha256 IMAGE" "$o"
    report_row "s$g" "sha256sum IMAGE" "$o"
    [ "$g" = 1 ] && report_row tampered "veriflash verify tampered 1 GiB pkg" "$o"
    echo
    echo "raw (wall_ms cpu_s rss_kib exit) per run:"
    for n in "v$g" "v1_$g" "o$g" "s$g"; do echo "  $n: $(tr '\n' ';' <"$WORK/$n.txt")"; done
    [ "$g" = 1 ] && echo "  tampered: $(tr '\n' ';' <"$WORK/tampered.txt")"
    echo
    rm -f "$IMG" "$PKG" "$WORK/tampered.vfp"
done
