#!/usr/bin/env bash
# The flashing station against the CLI's factory line, on the same emulated modems, in one
# session: total flash time of N devices, and how responsive the page stays meanwhile.
#
# Builds the release CLI, makes one signed MDM9607 package (a stand-in programmer and three
# images, IMAGE_MIB MiB in all, incompressible), then for each round, alternating the order:
#   * cli:     N fresh pty emulators (`veriflash emulate mdm9x07 --pty`), then
#              `veriflash flash update.vfp --target mdm9x07:serial:/dev/pts/X ...` (N targets):
#              wall time from the command's start to its exit;
#   * station: N fresh announced pty emulators and `veriflash station`, waits until the page's
#              state lists them identified, then presses "flash all" (POST /api/flash) and takes
#              the time from that request to the last device's `finished` event (the history
#              records' times, milliseconds, kept by the station). While it flashes, a client reads
#              the event stream (as the page does) and another fetches /api/state every 200 ms;
#              the script reports the slowest and median answer (the page's responsiveness).
# Prints one line per run and the medians, with the machine and the date. Everything it makes is
# deleted at the end. Not a test: timings on a shared machine vary (docs/STATION.md).
#
# Environment:
#   DEVICES=8        emulated modems per run
#   RUNS=3           rounds (each: one cli run and one station run)
#   IMAGE_MIB=8      payload size in MiB
#   VERIFLASH=path   use this binary instead of building one
#   CARGO_TARGET_DIR honoured; default: <repo>/target
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEVICES="${DEVICES:-8}"
RUNS="${RUNS:-3}"
IMAGE_MIB="${IMAGE_MIB:-8}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }

if [ -z "${VERIFLASH:-}" ]; then
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p veriflash-cli)
    VERIFLASH="$TARGET/release/veriflash"
fi

WORK="$(mktemp -d)"
PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
export VERIFLASH_STATE_DIR="$WORK/state" VERIFLASH_CONFIG_DIR="$WORK/config"
cd "$WORK"

now_ms() { date +%s%3N; }

# The package: programmer + sbl + boot + system, random bytes (incompressible).
"$VERIFLASH" emulate mdm9x07 --write-programmer programmer.elf >/dev/null
head -c $((IMAGE_MIB * 1024 * 1024 / 8)) /dev/urandom >sbl.img
head -c $((IMAGE_MIB * 1024 * 1024 * 3 / 8)) /dev/urandom >boot.img
head -c $((IMAGE_MIB * 1024 * 1024 / 2)) /dev/urandom >system.img
cat >update.toml <<'EOF'
product = "acme-hotspot-x1"
chipset = "mdm9607"
version = "2.4.0"
security_version = 7
hardware_revisions = ["r2"]
[[image]]
name = "programmer"
partition = "programmer"
file = "programmer.elf"
[[image]]
name = "sbl"
partition = "sbl"
file = "sbl.img"
[[image]]
name = "boot"
partition = "boot"
file = "boot.img"
[[image]]
name = "system"
partition = "system"
file = "system.img"
EOF
"$VERIFLASH" keygen --out vendor.pem >/dev/null
"$VERIFLASH" pack --manifest update.toml --key vendor.pem --out update.vfp >/dev/null

# N fresh emulators; their targets in TARGETS. ANNOUNCE=1: announced to the station.
start_emulators() {
    TARGETS=()
    local state="$WORK/quiet"
    [ "${1:-0}" = 1 ] && state="$VERIFLASH_STATE_DIR"
    rm -rf "$VERIFLASH_STATE_DIR" "$WORK/quiet"
    rm -f emu*.out
    for i in $(seq 1 "$DEVICES"); do
        VERIFLASH_STATE_DIR="$state" "$VERIFLASH" emulate mdm9x07 --pty \
            --serial "$(printf 'BE%04X' "$i")" >"emu$i.out" 2>/dev/null &
        PIDS+=($!)
    done
    for i in $(seq 1 "$DEVICES"); do
        while [ ! -s "emu$i.out" ]; do sleep 0.05; done
        TARGETS+=("mdm9x07:serial:$(head -1 "emu$i.out")")
    done
}

run_cli() {
    start_emulators 0
    local args=() t
    for t in "${TARGETS[@]}"; do args+=(--target "$t"); done
    local start end
    start=$(now_ms)
    "$VERIFLASH" flash update.vfp --trust vendor.pub.pem "${args[@]}" >cli.out 2>&1 ||
        { cat cli.out >&2; exit 1; }
    end=$(now_ms)
    stop_all
    echo $((end - start))
}

# Runs the python condition $1 until it holds (every 100 ms, at most 120 s).
wait_until() {
    local tries=0
    until python3 -c "$1" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 1200 ] || { echo "gave up waiting: $1" >&2; cat station.err >&2; exit 1; }
        sleep 0.1
    done
}

run_station() {
    start_emulators 1
    rm -f station.out station.err history.json
    "$VERIFLASH" station --package update.vfp --trust vendor.pub.pem >station.out 2>station.err &
    local station=$!
    PIDS+=("$station")
    while [ ! -s station.out ]; do sleep 0.05; done
    local url base token
    url=$(head -1 station.out)
    base=${url%%/\?token=*}
    token=${url#*token=}
    # Wait until every modem is identified and ready.
    wait_until "
import json, sys, urllib.request
s = json.load(urllib.request.urlopen('$base/api/state?token=$token'))
sys.exit(0 if sum(d['state'] == 'ready' for d in s['devices']) == $DEVICES else 1)"
    # A page's event stream (how the end is seen, too), and a client that asks for the state
    # every 200 ms meanwhile, timing each answer.
    curl -fsN "$base/api/events?token=$token" >events.out 2>/dev/null &
    local events=$!
    PIDS+=("$events")
    : >latency.out
    (
        while :; do
            curl -fs -o /dev/null -w '%{time_total}\n' "$base/api/state?token=$token" >>latency.out
            sleep 0.2
        done
    ) &
    local poller=$!
    PIDS+=("$poller")
    until grep -q '"type":"snapshot"' events.out 2>/dev/null; do sleep 0.05; done
    local start tries=0
    start=$(now_ms)
    curl -fs -X POST -H 'Content-Type: application/json' -H "X-Veriflash-Token: $token" \
        -d '{"all":true}' "$base/api/flash" >/dev/null
    until [ "$(grep -c '"type":"history"' events.out)" -ge "$DEVICES" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 2400 ] || { echo "the station never finished" >&2; cat station.err >&2; exit 1; }
        sleep 0.05
    done
    kill "$poller" 2>/dev/null || true
    wait "$poller" 2>/dev/null || true
    curl -fs "$base/api/history.json?token=$token" >history.json
    python3 - "$start" <<'EOF'
import json, sys, datetime, statistics
start = int(sys.argv[1])
records = json.load(open("history.json"))["records"]
assert all(r["result"] == "installed" for r in records), records
def ms(t):
    return int(datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
               .replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
end = max(ms(r["finished"]) for r in records)
lat = sorted(float(l) * 1000 for l in open("latency.out") if l.strip())
events = sum(1 for l in open("events.out") if l.startswith("data:"))
print(end - start, f"{max(lat):.1f}", f"{statistics.median(lat):.1f}", len(lat), events)
EOF
    stop_all
}

echo "machine: $(uname -m), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
echo "package: $(stat -c %s update.vfp) bytes, $DEVICES emulated modems on ptys, $RUNS rounds"
cli_times=()
station_times=()
for round in $(seq 1 "$RUNS"); do
    if [ $((round % 2)) = 1 ]; then order="cli station"; else order="station cli"; fi
    for which in $order; do
        if [ "$which" = cli ]; then
            t=$(run_cli)
            cli_times+=("$t")
            echo "round $round cli:     ${t} ms"
        else
            read -r t lmax lmed n events < <(run_station)
            station_times+=("$t")
            echo "round $round station: ${t} ms (state requests during the flash: $n, slowest ${lmax} ms, median ${lmed} ms; $events event-stream messages)"
        fi
    done
done
python3 - "${cli_times[*]}" "${station_times[*]}" <<'EOF'
import statistics, sys
cli = statistics.median(int(x) for x in sys.argv[1].split())
station = statistics.median(int(x) for x in sys.argv[2].split())
print(f"median cli factory line: {cli} ms; median station: {station} ms; station/cli = {station / cli:.3f}")
EOF
