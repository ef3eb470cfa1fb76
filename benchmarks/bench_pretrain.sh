#!/usr/bin/env bash
# End-to-end pre-training throughput of hdssl-pretrain (data pipeline included), and, when the PyTorch
# step benchmark of the method is given, that step at the same model and patch size in the same call.
#
#   benchmarks/bench_pretrain.sh [path/to/torch_step_bench.py]   (default: benchmarks/pytorch/torch_step_bench.py)
#
# 1. a small configuration (4 channels x 3 levels, 2 pairs of 32x32x16, 64 positives) on the Colin27 T1:
#    steps/s and the share of wall time the step waited for data, without and with a loader thread;
# 2. the paper's models (hdssl 32x5, vox2vec 16x6) at 2 pairs of 32x32x16 with 1024 positives, our median
#    step beside the PyTorch script's (its "default" mode: fp32, the reference's). Set DEVICE=cuda and
#    PATCH=128,128,32 PAIRS=10 on a GPU machine for the paper's batch.
# Environment: BUILD_DIR (default build), DEVICE (cpu), THREADS (0 = every core), STEPS (8), PATCH, PAIRS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-0}
STEPS=${STEPS:-8}
PATCH=${PATCH:-32,32,16}
PAIRS=${PAIRS:-2}
TORCH_BENCH=${1:-"$(dirname "$0")/pytorch/torch_step_bench.py"}
bin="$BUILD_DIR/bin/hdssl-pretrain"
[ -x "$bin" ] || { echo "bench_pretrain: $bin not built (cmake --build $BUILD_DIR --target hdssl-pretrain)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data"
ln -s /usr/share/mricron/templates/ch2.nii.gz "$work/data/ch2.nii.gz"
py=/usr/bin/python3

# Median seconds per step and mean data-wait share of the records after the first two (warm-up).
summarise() {
  "$py" - "$1" <<'EOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][2:]
t = sorted(1.0 / x["steps_per_s"] for x in r)
w = sum(x["data_wait"] for x in r) / len(r)
print("%.1f ms/step (median of %d), %.2f steps/s, data wait %.1f%%" % (1000 * t[len(t) // 2], len(t), 1 / t[len(t) // 2], 100 * w))
EOF
}

echo "== hdssl-pretrain, small config (4x3, 2 pairs of 32x32x16, 64 positives), device $DEVICE, $(nproc) cores"
for loader in 0 1; do
  "$bin" --data "$work/data" --out "$work/small$loader" --cache "$work/cache" --modality mri --base-channels 4 \
    --levels 3 --patch 32,32,16 --pairs 2 --positives 64 --steps 40 --log-every 1 --checkpoint-every 1000 \
    --device "$DEVICE" --threads "$THREADS" --loader-threads "$loader" > "$work/small$loader.log"
  echo "loader threads $loader: $(summarise "$work/small$loader/metrics.jsonl")"
done

echo "== the paper's models at $PAIRS pairs of $PATCH, 1024 positives, device $DEVICE"
for preset in hdssl vox2vec; do
  "$bin" --data "$work/data" --out "$work/$preset" --cache "$work/cache" --modality mri --preset "$preset" \
    --patch "$PATCH" --pairs "$PAIRS" --positives 1024 --steps "$((STEPS + 2))" --log-every 1 \
    --checkpoint-every 100000 --device "$DEVICE" --threads "$THREADS" > "$work/$preset.log"
  echo "hdssl-pretrain $preset: $(summarise "$work/$preset/metrics.jsonl")"
done
if [ -n "$TORCH_BENCH" ]; then
  "$py" "$TORCH_BENCH" --device "$DEVICE" --patch "${PATCH//,/x}" --pairs "$PAIRS" --steps "$STEPS" --warmup 2 \
    --modes default$([ "$DEVICE" = cuda ] && echo ,bf16cl)
fi
