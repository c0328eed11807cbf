#!/usr/bin/env bash
# Peak RSS and wall time of `veriflash pack --delta-from` for two veriflash binaries (say main's
# and a branch's) on one image pair, the runs alternated, and whether both pack the same delta:
# their signed messages (`pack --unsigned`: header and manifest, which hold the digest of every
# stored chunk and patch frame) compared byte for byte. Prints a Markdown table on stdout;
# progress goes to stderr.
#
#   benches/delta_pack_rss.sh BASELINE_BINARY BINARY V1.img V2.img
#
# For each variant (fixed chunks of 1 MiB and 64 KiB against a v1 package of 64 KiB chunks,
# content-defined chunks of at most 256 KiB against a v1 package cut the same way, as
# benches/delta/run.sh packs them), v1 is packed once, then each binary packs the delta ROUNDS
# times: median wall, largest peak RSS (GNU time's %M).
#
# Environment: ROUNDS=3, WORK= (a directory for the packages; a temporary one by default).
# Needs GNU time (/usr/bin/time).
set -euo pipefail

[ $# -eq 4 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
BASE="$(realpath "$1")"
NEW="$(realpath "$2")"
V1="$(realpath "$3")"
V2="$(realpath "$4")"
ROUNDS="${ROUNDS:-3}"
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time)" >&2; exit 1; }

OWN_WORK=""
if [ -z "${WORK:-}" ]; then
    WORK="$(mktemp -d)"
    OWN_WORK="$WORK"
fi
trap '[ -n "$OWN_WORK" ] && rm -rf "$OWN_WORK"' EXIT
cd "$WORK"
ln -sf "$V1" v1.img
ln -sf "$V2" v2.img
"$NEW" keygen --out key.pem --force >/dev/null

describe() { # FILE CHUNK
    printf '%s\n' 'product = "bench"' 'chipset = "mdm9607"' 'version = "1"' \
        'security_version = 1' "chunk_size = $2" '[[image]]' 'name = "rootfs"' \
        'partition = "rootfs"' "file = \"$1\""
}

log() { printf '%s\n' "$*" >&2; }

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "| variant | binary | wall s (median of $ROUNDS) | peak RSS MiB (max) | same delta |"
echo "|---|---|---|---|---|"
for variant in "fixed 1048576 65536" "fixed 65536 65536" "cdc 262144 262144"; do
    read -r mode chunk v1_chunk <<<"$variant"
    describe v1.img "$v1_chunk" >v1.toml
    describe v2.img "$chunk" >v2.toml
    "$NEW" pack --manifest v1.toml --key key.pem --chunking "$mode" --out "v1-$mode.vfp" >/dev/null
    : >walls-base
    : >walls-new
    : >rss-base
    : >rss-new
    for round in $(seq "$ROUNDS"); do
        for which in base new; do
            bin="$BASE"
            [ "$which" = new ] && bin="$NEW"
            log "$mode $chunk round $round: $which"
            /usr/bin/time -f '%e %M' -o time.out "$bin" pack --manifest v2.toml --key key.pem \
                --chunking "$mode" --delta-from "v1-$mode.vfp" --out "delta-$which.vfp" >/dev/null
            read -r wall rss <time.out
            echo "$wall" >>"walls-$which"
            echo "$rss" >>"rss-$which"
        done
    done
    for which in base new; do
        bin="$BASE"
        [ "$which" = new ] && bin="$NEW"
        "$bin" pack --manifest v2.toml --unsigned --delta-trust key.pub.pem --chunking "$mode" \
            --delta-from "v1-$mode.vfp" --out "message-$which.bin" >/dev/null
    done
    same=no
    cmp -s message-base.bin message-new.bin && same=yes
    for which in base new; do
        label="baseline"
        [ "$which" = new ] && label="this"
        rss_kib="$(sort -n "rss-$which" | tail -1)"
        echo "| $mode $((chunk >> 10)) KiB | $label | $(median <"walls-$which") | $((rss_kib / 1024)) | $same |"
    done
done
