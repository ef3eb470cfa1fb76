#!/usr/bin/env bash
# The paper's comparisons at CPU scale, on a cohort derived from real MRI (the Colin27 T1 and its AAL
# atlas, eight structures, 3 mm; hdssl-make-cohort). About 80 minutes on 2 cores.
#   1. Pre-training on 8 unlabelled subjects: vox2vec, hdssl and the two ablations (model policies of the
#      paper's Table 1), every one at 8 channels x 3 levels, 4 pairs of 32x32x16, 400 steps, hdssl
#      augmentations (vox2vec's own are defined in Hounsfield units, CT only).
#   2. Linear probing of each and of a random-initialised backbone with 1 and 4 labelled subjects.
#   3. Fine-tuning the hdssl backbone against training the same network from scratch, 1, 2 and 4 labelled.
#   Test Dice on 3 test subjects, mean +- std over SEEDS runs. With 1 (or 2) labelled subjects each seed
#   takes another labelled subject (seed s: subjects s, s+1, ...), so the spread includes which scan was
#   labelled; with 4 it is the spread over head initialisations and batches. Table in OUT/benchmark.md.
# Usage: benchmarks/real_data.sh [BUILD_DIR] [OUT]     Environment: SEEDS (default 2), FINETUNE_SEEDS (SEEDS), STEPS_PRETRAIN (400),
#        STEPS_PROBE (500), STEPS_FINETUNE (240), THREADS (every core).
# Needs hdssl-make-cohort, hdssl-pretrain, hdssl-linear-eval, hdssl-finetune built, and python3 (tables).
# Re-running with the same OUT skips every run that has finished (its results.json or backbone exists)
# and resumes the others from their checkpoints.
# A user with a GPU would run the same at the paper's sizes: drop --base-channels/--levels (32 x 5),
# --patch 128,128,32 with --pairs 10 --positives 1024, 50000 pre-training and 45000 downstream steps,
# --spacing 1.5 and as many subjects as there are scans.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
OUT=${2:-runs/real_data}
B="$BUILD_DIR/bin"
SEEDS=${SEEDS:-2}
FINETUNE_SEEDS=${FINETUNE_SEEDS:-$SEEDS}
STEPS_PRETRAIN=${STEPS_PRETRAIN:-400}
STEPS_PROBE=${STEPS_PROBE:-500}
STEPS_FINETUNE=${STEPS_FINETUNE:-240}
THREADS=${THREADS:-$(nproc)}
start=$(date +%s)
mkdir -p "$OUT/lists"
elapsed() { local s=$(( $(date +%s) - start )); printf '%d min %02d s' $((s / 60)) $((s % 60)); }

echo "== [$(elapsed)] cohort"
[ -f "$OUT/cohort/classes.json" ] \
  || "$B/hdssl-make-cohort" --out "$OUT/cohort" --pretrain 8 --labelled 4 --validation 1 --test 3 --spacing 3 --seed 0 \
     | grep --line-buffered -v '^subject'
C="$OUT/cohort"

# Datalists with k labelled subjects starting at subject s (cyclically), the cohort's validation and test lists.
python3 - "$C/labelled-4.json" "$OUT/lists" "$SEEDS" <<'EOF'
import json, os, sys
src, out, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(src))
base = os.path.dirname(os.path.abspath(src))
absolute = lambda items: [{k: os.path.join(base, v) for k, v in e.items()} for e in items]
train = absolute(d["training"])
for k in (1, 2, 4):
    for s in range(seeds):
        pick = [train[(s + i) % len(train)] for i in range(k)]
        json.dump({"training": pick, "validation": absolute(d["validation"]), "test": absolute(d["test"])},
                  open(os.path.join(out, "labelled-%d-seed-%d.json" % (k, s)), "w"), indent=1)
EOF

common=(--modality mri --preprocess '{"spacing": null}' --threads "$THREADS")
presets=(vox2vec hdssl ablation_architecture ablation_loss)
for p in "${presets[@]}"; do
  [ -f "$OUT/pretrain-$p/backbone.safetensors" ] && { echo "== pre-training $p: done before"; continue; }
  echo "== [$(elapsed)] pre-training: $p"
  "$B/hdssl-pretrain" --data "$C/pretrain.json" --out "$OUT/pretrain-$p" "${common[@]}" --preset "$p" \
      --base-channels 8 --levels 3 --patch 32,32,16 --pairs 4 --positives 256 --steps "$STEPS_PRETRAIN" \
      --log-every 100 --checkpoint-every "$STEPS_PRETRAIN" | grep --line-buffered -v '^volume'
done

down=(--classes "$C/classes.json" "${common[@]}" --patch 32,32,16 --window 32,32,16 --stride 16,16,8 --batch 4
      --checkpoint-every 100000 --pngs false)
quiet() { grep --line-buffered -E 'mean test Dice|error' || true; }
# run TOOL OUT ARGS...: one downstream run, unless it has finished before.
run() {
  local tool=$1 out=$2; shift 2
  [ -f "$out/results.json" ] && { echo "   done before: $out"; return 0; }
  "$B/$tool" "$@" --out "$out" | quiet
}
for k in 1 4; do
  for s in $(seq 0 $((SEEDS - 1))); do
    list="$OUT/lists/labelled-$k-seed-$s.json"
    probe=("${down[@]}" --data "$list" --seed "$s" --steps "$STEPS_PROBE" --lr 1e-2 --val-every 100 --log-every 100)
    echo "== [$(elapsed)] linear probe, $k labelled, seed $s: random initialisation"
    run hdssl-linear-eval "$OUT/probe-random-$k-$s" "${probe[@]}" --weights none --base-channels 8 --levels 3
    for p in "${presets[@]}"; do
      echo "== [$(elapsed)] linear probe, $k labelled, seed $s: $p"
      run hdssl-linear-eval "$OUT/probe-$p-$k-$s" "${probe[@]}" --weights "$OUT/pretrain-$p"
    done
  done
done

for k in 1 2 4; do
  for s in $(seq 0 $((FINETUNE_SEEDS - 1))); do
    list="$OUT/lists/labelled-$k-seed-$s.json"
    ft=("${down[@]}" --data "$list" --seed "$s" --steps "$STEPS_FINETUNE" --lr 3e-3 --val-every 100 --log-every 200)
    echo "== [$(elapsed)] fine-tuning, $k labelled, seed $s: hdssl backbone"
    run hdssl-finetune "$OUT/finetune-hdssl-$k-$s" "${ft[@]}" --weights "$OUT/pretrain-hdssl"
    echo "== [$(elapsed)] fine-tuning, $k labelled, seed $s: from scratch"
    run hdssl-finetune "$OUT/finetune-scratch-$k-$s" "${ft[@]}" --from-scratch --base-channels 8 --levels 3
  done
done

python3 - "$OUT" "$SEEDS" "$STEPS_PRETRAIN" "$STEPS_PROBE" "$STEPS_FINETUNE" "$FINETUNE_SEEDS" <<'EOF' | tee "$OUT/benchmark.md"
import json, os, statistics, sys
out, seeds, ft_seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[6])
def cell(prefix, k, seeds=seeds):
    d = [json.load(open(os.path.join(out, "%s-%d-%d" % (prefix, k, s), "results.json")))["mean_dice"] for s in range(seeds)]
    return "%.3f +- %.3f" % (statistics.mean(d), statistics.stdev(d)) if len(d) > 1 else "%.3f" % d[0]
names = {"random": "random initialisation", "vox2vec": "vox2vec (FPN, concatenated levels, InfoNCE)",
         "ablation_architecture": "+ balanced levels (InfoNCE)", "ablation_loss": "+ reconstruction loss (unbalanced)",
         "hdssl": "hdssl (balanced + InfoNCE + 10 MSE)"}
print("Linear probing, test Dice (8 structures, 3 test subjects; mean +- std over %d seeds)\n" % seeds)
print("| backbone (8 x 3 levels, %s pre-training steps) | 1 labelled | 4 labelled |" % sys.argv[3])
print("|---|---:|---:|")
for p in ["random", "vox2vec", "ablation_architecture", "ablation_loss", "hdssl"]:
    print("| %s | %s | %s |" % (names[p], cell("probe-" + p, 1), cell("probe-" + p, 4)))
print("\nFine-tuning (%s steps, lr 3e-3, intended schedule) vs from scratch, test Dice (%d seed%s)\n" % (sys.argv[5], ft_seeds, "s" if ft_seeds > 1 else ""))
print("| initialisation | 1 labelled | 2 labelled | 4 labelled |")
print("|---|---:|---:|---:|")
for p, n in [("hdssl", "pre-trained (hdssl)"), ("scratch", "from scratch")]:
    print("| %s | %s | %s | %s |" % (n, cell("finetune-" + p, 1, ft_seeds), cell("finetune-" + p, 2, ft_seeds), cell("finetune-" + p, 4, ft_seeds)))
EOF
echo "benchmark wall time: $(elapsed); table in $OUT/benchmark.md"
