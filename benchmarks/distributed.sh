#!/usr/bin/env bash
# Data-parallel scaling of hdssl-pretrain on this machine, and the all-reduce time per step of the hdssl
# model's gradients (bench_distributed).
#
#   benchmarks/distributed.sh            (after cmake --build build)
#
# Throughput is in pairs per second: the global batch (ranks x pairs) times steps per second, the median
# of the logged intervals after the first two. Three runs of the same small configuration on the Colin27 T1:
#   1 rank x 1 thread        the per-rank baseline
#   1 rank x 2 threads       one process using both cores (what the machine does without data parallelism)
#   2 ranks x 1 thread       data parallel (--nproc 2, Gloo on loopback)
# Scaling efficiency = 2-rank throughput / (2 x the 1-thread baseline). With 2 cores the ranks share the
# machine's memory bandwidth and the all-reduce runs on the same cores: expect well under 100%.
# Environment: BUILD_DIR (build), STEPS (16), BASE (8), LEVELS (4), PATCH (48,48,24), PAIRS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-16}
BASE=${BASE:-8}
LEVELS=${LEVELS:-4}
PATCH=${PATCH:-48,48,24}
PAIRS=${PAIRS:-2}
bin="$BUILD_DIR/bin"
for b in hdssl-pretrain bench_distributed; do
  [ -x "$bin/$b" ] || { echo "distributed.sh: $bin/$b not built (cmake --build $BUILD_DIR)" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data"
ln -s /usr/share/mricron/templates/ch2.nii.gz "$work/data/ch2.nii.gz"
py=/usr/bin/python3

# pairs/s of a finished run: global pairs per step x the median logged steps/s after two intervals.
throughput() {
  "$py" - "$1" "$2" <<'PYEOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][2:]
s = sorted(x["steps_per_s"] for x in r)
print("%.4f" % (int(sys.argv[2]) * s[len(s) // 2]))
PYEOF
}

run() {  # name nproc threads
  local out="$work/$1"
  "$bin/hdssl-pretrain" --nproc "$2" --threads "$3" --data "$work/data" --out "$out" --cache "$work/cache" \
    --modality mri --base-channels "$BASE" --levels "$LEVELS" --patch "$PATCH" --pairs "$PAIRS" --positives 256 \
    --steps "$STEPS" --log-every 1 --checkpoint-every "$STEPS" > "$work/$1.log" 2>&1 ||
    { cat "$work/$1.log" >&2; exit 1; }
  throughput "$out/metrics.jsonl" $(( $2 * PAIRS ))
}

echo "# hdssl data-parallel scaling, $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "config: base $BASE x $LEVELS levels, $PAIRS pairs of $PATCH per rank, $STEPS steps"
one1=$(run one-1 1 1)
one2=$(run one-2 1 2)
two=$(run two 2 1)
"$py" - "$one1" "$one2" "$two" <<'PYEOF'
import sys
a, b, c = map(float, sys.argv[1:])
print("| run | pairs/s |")
print("|---|---:|")
print("| 1 rank x 1 thread | %.3f |" % a)
print("| 1 rank x 2 threads | %.3f |" % b)
print("| 2 ranks x 1 thread (gloo) | %.3f |" % c)
print("scaling efficiency (2 ranks vs 2 x 1 rank x 1 thread): %.0f%%" % (100 * c / (2 * a)))
print("2 ranks vs 1 rank using both cores: %.2fx" % (c / b))
PYEOF
echo "## all-reduce of the hdssl model's gradients per step"
"$bin/bench_distributed" --nproc 1
"$bin/bench_distributed" --nproc 1 --alone
"$bin/bench_distributed" --nproc 2
