#!/usr/bin/env bash
# The main job on real anatomy, small enough for a laptop CPU (about 10 minutes on 2 cores):
#   1. a cohort of synthetic subjects from the Colin27 T1 and its AAL atlas (eight structures), at 3 mm;
#   2. self-supervised pre-training (the hdssl method) of a small model on 6 unlabelled subjects;
#   3. linear probing of that backbone and of a random-initialised one with 1 and with 4 labelled subjects;
#   4. a table of test Dice (2 test subjects), also in OUT/demo.md; PNGs in OUT/probe-*/predictions/.
# Usage: scripts/demo.sh [BUILD_DIR] [OUT]   (scripts/bootstrap.sh demo builds first and calls this)
# Scale it up: more subjects (hdssl-make-cohort --pretrain/--labelled), --spacing 1.5, the default model
# (drop --base-channels/--levels), patches of 128x128x32 and the default steps: a GPU's work.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
OUT=${2:-runs/demo}
B="$BUILD_DIR/bin"
THREADS=${THREADS:-$(nproc)}
start=$(date +%s)
mkdir -p "$OUT"

echo "== 1/3 cohort: synthetic subjects from the Colin27 T1 + AAL (mricron-data)"
"$B/hdssl-make-cohort" --out "$OUT/cohort" --pretrain 6 --labelled 4 --validation 1 --test 2 --spacing 3 --seed 0

common=(--modality mri --preprocess '{"spacing": null}' --threads "$THREADS")
echo "== 2/3 pre-training (hdssl preset, 8 channels x 3 levels, 4 pairs of 32x32x16)"
"$B/hdssl-pretrain" --data "$OUT/cohort/pretrain.json" --out "$OUT/pretrain" "${common[@]}" \
    --base-channels 8 --levels 3 --patch 32,32,16 --pairs 4 --positives 256 --steps 400 --log-every 50 \
    --checkpoint-every 200

echo "== 3/3 linear probing, pre-trained vs random initialisation, 1 and 4 labelled subjects"
probe=(--classes "$OUT/cohort/classes.json" "${common[@]}" --patch 32,32,16 --window 32,32,16 --stride 16,16,8
       --batch 4 --steps 400 --lr 1e-2 --val-every 100 --log-every 100 --checkpoint-every 400)
for k in 1 4; do
  "$B/hdssl-linear-eval" --data "$OUT/cohort/labelled-$k.json" --weights "$OUT/pretrain" --out "$OUT/probe-pretrained-$k" "${probe[@]}"
  "$B/hdssl-linear-eval" --data "$OUT/cohort/labelled-$k.json" --weights none --base-channels 8 --levels 3 \
      --out "$OUT/probe-random-$k" "${probe[@]}"
done

dice() { python3 -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['mean_dice'])" "$1/results.json" 2>/dev/null \
         || grep -o '"mean_dice": [0-9.e-]*' "$1/results.json" | tail -1 | awk '{printf "%.3f", $2}'; }
{
  echo "| backbone | 1 labelled subject | 4 labelled subjects |"
  echo "|---|---:|---:|"
  echo "| pre-trained (hdssl, 400 steps) | $(dice "$OUT/probe-pretrained-1") | $(dice "$OUT/probe-pretrained-4") |"
  echo "| random initialisation | $(dice "$OUT/probe-random-1") | $(dice "$OUT/probe-random-4") |"
} > "$OUT/demo.md"
echo
echo "Linear-probe test Dice (mean over 8 structures and 2 test subjects):"
cat "$OUT/demo.md"
echo "Per-structure tables: $OUT/probe-*/results.md; pictures: $OUT/probe-*/predictions/*.png"
echo "demo wall time: $(( $(date +%s) - start )) s"
