#!/bin/bash
# Compressed vs raw veriflash packages of a real-looking image, next to the zstd CLI on the same
# bytes (docs/PERFORMANCE.md, "Compressed packages"). Needs e2fsprogs, zstd, bc and a release
# build of the CLI. Make the image first, e.g.:
#   mkdir -p tree/usr/share tree/usr/bin && cp -a /usr/share/doc /usr/share/perl tree/usr/share/
#   (copy a few hundred mid-sized programs from /usr/bin into tree/usr/bin)
#   mkfs.ext4 -q -F -b 4096 -d tree rootfs.ext4 256M
# Usage: benches/compress_compare.sh target/release/veriflash /abs/path/rootfs.ext4
set -u
V=$1; IMG=$2; D=$(dirname "$IMG")/pkg; mkdir -p "$D"
[ -f "$D/key.pem" ] || "$V" keygen --out "$D/key.pem" >/dev/null
PUB="$D/key.pub.pem"
cat > "$D/update.toml" <<T
product = "acme-hotspot-x1"
chipset = "mdm9607"
hardware_revisions = ["r2"]
version = "bench"
security_version = 1
[[image]]
name = "rootfs"
partition = "system"
file = "$IMG"
T
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; local e=$(date +%s.%N); printf "%.2f" "$(echo "$e - $s" | bc)"; [ $rc = 0 ] || printf "(rc=%s)" $rc; }
echo "image $(stat -c %s "$IMG") bytes"
for mode in raw 1 3 9 19; do
  if [ $mode = raw ]; then c=""; else c="--compress=$mode"; fi
  p="$D/pkg-$mode.vfp"
  pt=$(t "$V" pack --manifest "$D/update.toml" --key "$D/key.pem" $c --out "$p")
  vt=""; for r in 1 2 3; do vt="$vt $(t "$V" verify --trust "$PUB" "$p")"; done
  echo "veriflash $mode: size $(stat -c %s "$p") pack ${pt}s verify(3 runs)${vt}s"
done
for lvl in 1 3 9 19; do
  pt=$(t zstd -q -f -$lvl "$IMG" -o "$D/img.$lvl.zst")
  dt=""; for r in 1 2 3; do dt="$dt $(t sh -c "zstd -q -d -c $D/img.$lvl.zst > /dev/null")"; done
  echo "zstd -$lvl (single frame, whole file): size $(stat -c %s "$D/img.$lvl.zst") compress ${pt}s decompress(3 runs)${dt}s"
done
#pt=$(t zstd -q -f -9 -T0 "$IMG" -o "$D/img.9mt.zst"); echo "zstd -9 -T0: compress ${pt}s"
sh_t=""; for r in 1 2 3; do sh_t="$sh_t $(t sha256sum "$IMG")"; done; echo "sha256sum image:$sh_t s"
uptime
