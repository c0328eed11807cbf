#!/usr/bin/env bash
# Whole-process comparison of the hash path (issue 20), every ratio against baselines taken in
# the same run on the same machine:
#
# * the floor: OpenSSL's SHA-256 speed per core (`openssl speed -evp sha256`, 1 MiB blocks) and
#   the cost of copying the image out of the page cache (`dd bs=1M` to /dev/null: the same
#   `read` into a chunk-sized buffer veriflash's workers do); from them, the limit for N
#   hashing threads on this machine, S x (1/copy + 1/hash) / N, and each result as a multiple
#   of that limit;
# * `veriflash verify` (all cores, and --threads 1) vs `openssl dgst -sha256` vs `sha256sum`;
# * `veriflash flash` to a file device (writes, read-back, commit) vs `cp` of the image plus
#   `openssl dgst` of the source and of the copy;
# * `veriflash fetch` of the package from nginx on loopback (every chunk verified, written to
#   disk) vs `curl -o` of the same file.
#
# Images are incompressible (AES-CTR keystream, not sparse), 1 MiB chunks, one P-256 signature;
# the page cache is warmed first. Each round runs the commands of a group in a rotated order
# (A B C, B C A, ...); the tables give the median wall time, the median CPU time (user+sys) and
# the peak RSS (`/usr/bin/time -v`). Everything it makes is deleted at the end.
#
# Environment:
#   RUNS=5                 rounds per size (>= 5)
#   SIZES="1 4"            image sizes in GiB (flash and fetch run at the first size only)
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
for tool in openssl bc curl nginx; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
        { echo "needs $tool (apt-get install -y openssl bc curl nginx-light)" >&2; exit 1; }
done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

if [ -z "${VERIFLASH:-}" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p veriflash-cli)
    VERIFLASH="$TARGET/release/veriflash"
fi

mkdir -p "$DATA"
WORK="$(mktemp -d "$DATA/compare.XXXXXX")"
chmod 755 "$WORK" # nginx's workers run as another user and serve the package from here
cleanup() {
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

first="${SIZES%% *}"
need_gib=0
for s in $SIZES; do need_gib=$((need_gib + 2 * s)); done
# the tampered copy, the device (two slots), the cp and fetch outputs of the first size
need_gib=$((need_gib + 1 + 4 * first))
avail_kib="$(df -Pk "$DATA" | awk 'NR==2 {print $4}')"
if [ "$avail_kib" -lt $((need_gib * 1024 * 1024 + 1024 * 1024)) ]; then
    echo "not enough space in $DATA: need ~${need_gib} GiB" >&2
    exit 1
fi

CORES="$(nproc)"
echo "# veriflash whole-process comparison"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:  $(lscpu | sed -n 's/^Model name: *//p' | head -1), $CORES CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(grep -qw sha_ni /proc/cpuinfo && echo SHA-NI || echo no SHA-NI)"
echo "binary:   $("$VERIFLASH" --version)"
echo "openssl:  $(openssl version)"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
echo "runs:     $RUNS per command, rotated"
echo

# The per-core hash speed of this machine, as OpenSSL reaches it: bytes per second.
HASH_BPS="$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null |
    awk '/^sha256/ {v=$NF; sub(/k$/, "", v); printf "%.0f", v * 1000}')"
[ -n "$HASH_BPS" ] || { echo "could not read openssl speed's result" >&2; exit 1; }

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
    printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'version = "1.0.0"' \
        'security_version = 1' '' '[[image]]' 'name = "rootfs"' 'partition = "system"' \
        "file = \"image.$g\"" >"$WORK/pkg.$g.toml"
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

# report_row NAME LABEL BASE_MS [LIMIT_MS]: a table row; ratio to BASE_MS, multiple of LIMIT_MS.
report_row() {
    local wall cpu rss status limit="—"
    wall="$(median "$1" 1)"
    cpu="$(median "$1" 2)"
    rss="$(sort -n -k3 "$WORK/$1.txt" | tail -1 | awk '{print $3}')"
    status="$(awk '{print $4}' "$WORK/$1.txt" | sort -u | tr '\n' ' ')"
    [ -n "${4:-}" ] && limit="$(printf '%.2f' "$(echo "$wall / $4" | bc -l)")"
    printf '| %-40s | %7s | %9.2f | %6s | %5.2f | %7.1f | %s|\n' "$2" "$wall" \
        "$(echo "scale=2; $wall / $3" | bc -l)" "$limit" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$status"
}

table_head() { # BASELINE
    printf '| %-40s | wall ms | %9s | ×limit | CPU s | RSS MiB | exit |\n' command "×$1"
    echo "|------------------------------------------|--------:|----------:|-------:|------:|--------:|------|"
}

# rounds NAME:COMMAND...: RUNS rounds, the commands rotated in each round. Each argument is a
# measurement name, a colon and a shell command line.
rounds() {
    local specs=("$@") n=$# r i spec
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < n; i++)); do
            spec="${specs[$(((i + r) % n))]}"
            # What the previous command wrote goes to the disk before, not during, this one.
            sync
            measure "${spec%%:*}" bash -c "${spec#*:}"
        done
    done
}

raw() { # NAME...: the per-run figures
    echo "raw (wall_ms cpu_s rss_kib exit) per run:"
    for n in "$@"; do echo "  $n: $(tr '\n' ';' <"$WORK/$n.txt")"; done
    echo
}

V="$VERIFLASH"
KEY="$WORK/key.pub.pem"
for g in $SIZES; do
    make_package "$g"
    IMG="$WORK/image.$g"
    PKG="$WORK/pkg.$g.vfp"
    if [ "$g" = "$first" ]; then
        cp "$PKG" "$WORK/tampered.vfp"
        # Flip one byte inside the manifest (the header is 32 bytes).
        printf '\xff' | dd of="$WORK/tampered.vfp" bs=1 seek=100 conv=notrunc status=none
    fi
    sync
    # Warm the page cache with everything this size's runs read.
    cat "$IMG" "$PKG" >/dev/null
    [ "$g" = "$first" ] && cat "$WORK/tampered.vfp" >/dev/null
    cached="$(free -g | awk '/^Mem:/ {print $6}')"

    rounds "copy$g:dd if='$PKG' of=/dev/null bs=1M status=none" \
        "v$g:'$V' verify --trust '$KEY' '$PKG'" \
        "v1_$g:'$V' verify --threads 1 --trust '$KEY' '$PKG'" \
        "o$g:openssl dgst -sha256 '$IMG'" \
        "s$g:sha256sum '$IMG'"
    [ "$g" = "$first" ] && rounds "tampered:'$V' verify --trust '$KEY' '$WORK/tampered.vfp'"

    bytes=$((g * 1024 * 1024 * 1024))
    o="$(median "o$g" 1)"
    copy_ms="$(median "copy$g" 1)"
    hash_ms="$(echo "$bytes * 1000 / $HASH_BPS" | bc -l)"
    limit1="$(echo "$copy_ms + $hash_ms" | bc -l)"
    limitn="$(echo "$limit1 / $CORES" | bc -l)"
    echo "## ${g} GiB image (page cache: ${cached} GiB buff/cache after warming)"
    echo
    echo "Baselines of this run: OpenSSL SHA-256 $(echo "$HASH_BPS / 1000000" | bc) MB/s per core" \
        "($(printf '%.0f' "$hash_ms") ms for the image); copy out of the page cache" \
        "(\`dd bs=1M\`) $(printf '%.0f' "$copy_ms") ms. Limit = copy + hash over the hashing" \
        "threads: 1 thread $(printf '%.0f' "$limit1") ms, $CORES threads $(printf '%.0f' "$limitn") ms."
    echo
    table_head openssl
    report_row "v$g" "veriflash verify (default: $CORES threads)" "$o" "$limitn"
    report_row "v1_$g" "veriflash verify --threads 1" "$o" "$limit1"
    report_row "o$g" "openssl dgst -sha256 IMAGE" "$o" "$limit1"
    report_row "s$g" "sha256sum IMAGE" "$o"
    report_row "copy$g" "dd if=PKG of=/dev/null bs=1M (copy)" "$o"
    [ "$g" = "$first" ] && report_row tampered "veriflash verify, tampered manifest" "$o"
    echo
    raw "v$g" "v1_$g" "o$g" "s$g" "copy$g"
    [ "$g" = "$first" ] && raw tampered

    if [ "$g" = "$first" ]; then
        # flash: a file device whose system partition holds the image, in slots A and B.
        printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'hardware_revision = "r1"' '' '[[partition]]' \
            'name = "system"' "size = $bytes" 'ab = true' >"$WORK/layout.toml"
        "$V" device init --layout "$WORK/layout.toml" "file:$WORK/device.img" >/dev/null
        cat "$WORK/device.img" >/dev/null
        rounds "flash$g:'$V' flash --trust '$KEY' --target 'file:$WORK/device.img' '$PKG'" \
            "cp$g:cp '$IMG' '$WORK/copy.img' && openssl dgst -sha256 '$IMG' '$WORK/copy.img'"
        c="$(median "cp$g" 1)"
        echo "## flash ${g} GiB to a file device (erase, writes, read-back, commit; fsync)"
        echo
        table_head "cp+2dgst"
        report_row "flash$g" "veriflash flash PKG --target file:DEV" "$c"
        report_row "cp$g" "cp IMAGE COPY + openssl dgst of both" "$c"
        echo
        raw "flash$g" "cp$g"
        rm -f "$WORK/device.img" "$WORK/copy.img"

        # fetch: nginx on loopback serves the package; both clients write it to disk.
        port=$((20000 + RANDOM % 20000))
        printf '%s\n' 'daemon on;' 'worker_processes 1;' "pid $WORK/nginx.pid;" \
            "error_log $WORK/nginx.err;" 'events { worker_connections 64; }' \
            "http { access_log off; sendfile on; server { listen 127.0.0.1:$port; root $WORK; } }" \
            >"$WORK/nginx.conf"
        "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null
        URL="http://127.0.0.1:$port/pkg.$g.vfp"
        rounds "fetch$g:rm -f '$WORK/fetched.vfp'; '$V' fetch '$URL' --trust '$KEY' --out '$WORK/fetched.vfp'" \
            "curl$g:rm -f '$WORK/curled.vfp'; curl -fsS -o '$WORK/curled.vfp' '$URL'"
        kill "$(cat "$WORK/nginx.pid")" && rm -f "$WORK/nginx.pid"
        c="$(median "curl$g" 1)"
        echo "## fetch ${g} GiB over loopback HTTP (nginx), written to disk"
        echo
        table_head curl
        report_row "fetch$g" "veriflash fetch URL --out FILE" "$c"
        report_row "curl$g" "curl -o FILE URL" "$c"
        echo
        raw "fetch$g" "curl$g"
        rm -f "$WORK/fetched.vfp" "$WORK/curled.vfp" "$WORK/tampered.vfp"
    fi
    rm -f "$IMG" "$PKG"
done
