#!/usr/bin/env bash
# hdssl's CUDA checks on a GPU machine: builds test_cuda, bench_kernels and bench_model against the CUDA
# LibTorch of the machine's PyTorch wheel (tests/cuda/standalone: no Eigen/NIfTI/CLI11 needed), runs them
# (test_cuda: the kernels and the augmentations against the CPU; bench_kernels: shuffle, gather and the
# augmentation sets against the bytes floor; bench_model: the training step, fp32 and bf16 + channels-last,
# with peak memory and a per-phase breakdown) and PyTorch's step (benchmarks/pytorch/torch_step_bench.py) in
# the same call, then hdssl-pretrain end to end (augmentations on the CPU and on the GPU), and writes every
# log and result to $OUT.
#
#   scripts/gpu_check.sh prepare   on a machine with the project's dependencies installed: copies the
#                                  header-only test dependencies (doctest, nlohmann_json, Google Benchmark's
#                                  header) and libbenchmark's shared library into build-gpu-deps/
#   scripts/gpu_check.sh run       on the GPU machine (build-gpu-deps/ must travel with the tree); ends with
#                                  hdssl-pretrain end to end if the budget leaves time
#   scripts/gpu_check.sh pretrain  hdssl-pretrain end to end only (a second call on the still-warm machine
#                                  reuses the first one's build)
#
# Environment: OUT (results folder; default build-gpu/out), HDSSL_GPU_BUDGET_S (whole run, default 560),
# HDSSL_CUDA_ARCH (default 90), HDSSL_GPU_JOBS (default: all cores), HDSSL_GPU_CMAKE_ARGS (extra configure
# arguments, split on spaces), HDSSL_GPU_BUILD_S (build step limit, default 300); for hdssl-pretrain
# HDSSL_GPU_PRETRAIN_S (limit per run, default 70), _STEPS (200), _DEVICE (cuda), _ARGS (extra flags).
# Every step runs under its own timeout inside the overall budget; a failed step is logged and the
# script goes on with the next one, so one run returns as much as possible.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/build-gpu-deps"
BUILD="$ROOT/build-gpu"

# hdssl-pretrain as a user runs it on one GPU (Colin27 T1, the default hdssl model, batch and bf16 +
# channels-last): augmentations on the loader's CPU threads, on the GPU, and on the GPU with the views cut
# there from resident volumes (--crop-device cuda): steps/s and the data-wait share from metrics.jsonl (the
# first interval, with cuDNN's autotuning, left out).
pretrain_end_to_end() {
  local bin=$1
  if [[ ! -x "$bin/hdssl-pretrain" ]]; then
    echo "=== hdssl-pretrain: not built (see the configure log)"
    return
  fi
  local run aug crop
  for run in cpu:cpu cuda:cpu cuda:cuda; do
    aug=${run%%:*} crop=${run##*:}
    local name="pretrain_aug-${aug}_crop-${crop}"
    rm -rf "$BUILD/$name"
    step "$name" "${HDSSL_GPU_PRETRAIN_S:-70}" "$bin/hdssl-pretrain" --data "$DEPS/data" --modality mri \
      --out "$BUILD/$name" --cache "$BUILD/pretrain-cache" --device "${HDSSL_GPU_PRETRAIN_DEVICE:-cuda}" \
      --augment-device "$aug" --crop-device "$crop" --steps "${HDSSL_GPU_PRETRAIN_STEPS:-200}" --log-every 20 \
      --checkpoint-every 100000 ${HDSSL_GPU_PRETRAIN_ARGS:-}
    cp "$BUILD/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null || true
  done
  python3 - "$OUT" <<'PY' | tee "$OUT/pretrain_summary.txt" || true
import json, os, sys
print("hdssl-pretrain end to end (flags in pretrain_*.log; the first logged interval left out):")
for run in ("aug-cpu_crop-cpu", "aug-cuda_crop-cpu", "aug-cuda_crop-cuda"):
    path = os.path.join(sys.argv[1], f"pretrain_{run}.metrics.jsonl")
    try:
        recs = [json.loads(l) for l in open(path) if l.strip()][1:]
    except OSError:
        recs = []
    if not recs:
        print(f"  {run}: no records")
        continue
    rate = sum(r["steps_per_s"] for r in recs) / len(recs)
    wait = sum(r["data_wait"] for r in recs) / len(recs)
    print(f"  {run}: {rate:.2f} steps/s ({1000 / rate:.0f} ms/step), data wait {100 * wait:.1f}%, "
          f"{len(recs)} intervals to step {recs[-1]['step']}, 50000 steps in {50000 / rate / 3600:.2f} h")
PY
}

prepare() {
  set -ex
  rm -rf "$DEPS"
  mkdir -p "$DEPS/include" "$DEPS/lib"
  cp -r /usr/include/doctest "$DEPS/include/"
  cp -r /usr/include/nlohmann "$DEPS/include/"
  cp -r /usr/include/benchmark "$DEPS/include/"
  cp -r /usr/include/CLI "$DEPS/include/"
  # The SONAME file itself (a plain file: links may not travel).
  cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$DEPS/lib/libbenchmark.so.1debian"
  # hdssl-pretrain end to end: Eigen, nifticlib, stb headers; nifticlib, znz and zlib as static libraries
  # (nothing to install there); the Colin27 T1 of mricron-data as its data.
  cp -r /usr/include/eigen3 /usr/include/nifti /usr/include/stb "$DEPS/include/"
  cp /usr/lib/x86_64-linux-gnu/libnifti2.a /usr/lib/x86_64-linux-gnu/libznz.a /usr/lib/x86_64-linux-gnu/libz.a "$DEPS/lib/"
  mkdir -p "$DEPS/data"
  cp /usr/share/mricron/templates/ch2.nii.gz "$DEPS/data/"
  du -sh "$DEPS"
}

run() {
  local what=${1:-all}  # all | pretrain (hdssl-pretrain end to end only)
  OUT="${OUT:-$BUILD/out}"
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu_check.log") 2>&1
  set -x
  local budget="${HDSSL_GPU_BUDGET_S:-560}"
  local start=$SECONDS
  # step NAME LIMIT_S CMD...: runs CMD with min(LIMIT_S, what is left of the budget), logs to $OUT/NAME.log.
  step() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 5)); then
      echo "=== $name: SKIPPED (budget spent)"
      return 124
    fi
    echo "=== $name (limit ${limit}s) at $((SECONDS - start))s"
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 60 "$OUT/$name.log"
    echo "=== $name: rc=$rc after $((SECONDS - start))s"
    return $rc
  }

  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv || true
  nvcc --version | tail -n 2 || true
  cmake --version | head -n 1 || true
  local torch_prefix torch_lib
  torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' || true
  export LD_LIBRARY_PATH="$DEPS/lib:$torch_lib:${LD_LIBRARY_PATH:-}"
  local nvcc_bin
  nvcc_bin="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
  local jobs="${HDSSL_GPU_JOBS:-$(nproc)}"
  local gen=() keep_going=(-- -k)
  if command -v ninja >/dev/null; then
    gen=(-G Ninja)
    keep_going=(-- -k 0)
  fi

  # LibTorch headers that refuse C++17 say so with an #error: pick the standard before the first build.
  local torch_inc cxx_std=17
  torch_inc="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
  if [[ -d "$torch_inc" ]] && grep -rqs --include='*.h' "C++20 or later" "$torch_inc/c10" "$torch_inc/ATen" "$torch_inc/torch"; then
    cxx_std=20
  fi
  echo "=== C++ standard for LibTorch consumers: $cxx_std"
  # nccl.h for the NCCL process group: the nvidia-nccl wheel beside PyTorch, else the CUDA toolkit's.
  local nccl_inc
  nccl_inc="$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null || true)"
  [[ -f "$nccl_inc/nccl.h" ]] || nccl_inc=""
  local cfg=(cmake -S "$ROOT/tests/cuda/standalone" -B "$BUILD/cmake" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_COMPILER="$nvcc_bin"
    -DCMAKE_CUDA_ARCHITECTURES="${HDSSL_CUDA_ARCH:-90}" -DHDSSL_GPU_DEPS="$DEPS" -DHDSSL_CUDA_VERBOSE=ON
    -DHDSSL_CXX_STANDARD="$cxx_std" ${nccl_inc:+-DHDSSL_NCCL_INCLUDE_DIR="$nccl_inc"}
    ${HDSSL_GPU_CMAKE_ARGS:-})
  local targets=(test_cuda bench_kernels bench_model)
  [[ $what == pretrain ]] && targets=()
  # A second call on a warm machine (`pretrain`) reuses the first one's configuration.
  if [[ $what == all || ! -f "$BUILD/cmake/CMakeCache.txt" ]]; then
    rm -rf "$BUILD/cmake"
    step configure 150 "${cfg[@]}"
  fi
  # hdssl-pretrain where its CPU dependencies were found (tests/cuda/standalone/CMakeLists.txt).
  if grep -qs "hdssl-pretrain" "$BUILD/cmake/Makefile" "$BUILD/cmake/build.ninja"; then targets+=(hdssl-pretrain); fi
  # keep going: build every target that compiles even if another fails.
  if ! step build "${HDSSL_GPU_BUILD_S:-300}" cmake --build "$BUILD/cmake" -j "$jobs" --target "${targets[@]}" "${keep_going[@]}"; then
    if [[ $cxx_std == 17 ]] && grep -qiE "c\+\+20|std=c\+\+2a|requires.*C\+\+ ?20" "$OUT/build.log"; then
      echo "=== the LibTorch seems to need C++20: reconfigure and rebuild"
      rm -rf "$BUILD/cmake"
      step configure 90 "${cfg[@]}" -DHDSSL_CXX_STANDARD=20
      step build 240 cmake --build "$BUILD/cmake" -j "$jobs" --target "${targets[@]}" "${keep_going[@]}"
    fi
  fi
  grep -E "registers|spill|smem" "$OUT/build.log" | head -n 40 || true

  local bin="$BUILD/cmake/bin"
  [[ $what == pretrain ]] && { pretrain_end_to_end "$bin"; return; }
  if [[ -x "$bin/test_cuda" ]]; then
    step test_cuda 120 "$bin/test_cuda" --duration=true
  else
    echo "=== test_cuda: not built"
  fi
  if grep -q "bench_distributed" "$BUILD/cmake/Makefile" "$BUILD/cmake/build.ninja" 2>/dev/null; then
    step build_distributed 200 cmake --build "$BUILD/cmake" -j "$jobs" --target bench_distributed || true
  fi
  if [[ -x "$bin/bench_distributed" ]]; then
    # The NCCL path at world size 1: the all-reduce of the hdssl model's gradients per step (issue: < 2% of a step).
    step bench_distributed 90 bash -c "MASTER_PORT=29531 '$bin/bench_distributed' --device cuda --backend nccl --alone --iters 20 \
      | tee '$OUT/bench_distributed.txt'"
  else
    echo "=== bench_distributed: not built (see the configure log)"
  fi
  if [[ -x "$bin/bench_kernels" ]]; then
    # JSON on stdout (the results file), the console table on stderr via the log of the step.
    step bench_kernels 150 bash -c "'$bin/bench_kernels' --benchmark_format=json --benchmark_min_time=0.1s \
      >'$OUT/bench_kernels.json'"
    python3 - "$OUT/bench_kernels.json" <<'PY' | tee "$OUT/bench_summary.txt" || true
import json, sys
data = json.load(open(sys.argv[1]))
ctx = data.get("context", {})
benches = data.get("benchmarks", [])
copy = next((b.get("GB/s") for b in benches if b["name"].startswith("BM_DeviceCopy") and not b.get("error_occurred")), None)
print("card:", ctx.get("hdssl_device", "?"), "| spec GB/s:", ctx.get("hdssl_peak_GBps", "?"), "| measured copy GB/s:", copy)
print("x_floor = time / (bytes at the measured copy bandwidth)")
for b in benches:
    if b.get("error_occurred"):
        print(f"{b['name']:<60} SKIPPED: {b.get('error_message', '')}")
        continue
    gbs = b.get("GB/s", float("nan"))
    x_floor = copy / gbs if copy and gbs == gbs and gbs > 0 else float("nan")
    print(f"{b['name']:<60} {b['real_time']:>10.1f} {b['time_unit']}  {gbs:8.1f} GB/s  "
          f"{100 * b.get('of_peak', float('nan')):5.1f}% of spec  x_floor {x_floor:5.2f}  bytes {b.get('bytes', 0):.3g}")
PY
  else
    echo "=== bench_kernels: not built"
  fi
  # The training step: ours (bench_model) and PyTorch's (torch_step_bench.py), same card, same call.
  if [[ -x "$bin/bench_model" ]]; then
    step bench_model 150 bash -c "'$bin/bench_model' --benchmark_filter=step_cuda --benchmark_format=json \
      >'$OUT/bench_model.json'"
  else
    echo "=== bench_model: not built"
  fi
  step torch_step 150 bash -c "python3 '$ROOT/benchmarks/pytorch/torch_step_bench.py' --device cuda --steps 12 \
    | tee '$OUT/torch_step.jsonl'"
  python3 - "$OUT/bench_model.json" "$OUT/torch_step.jsonl" <<'PY' | tee "$OUT/step_summary.txt" || true
import json, sys
ours = {}
try:
    for b in json.load(open(sys.argv[1])).get("benchmarks", []):
        if not b.get("error_occurred"):
            _, mode, cfg, _ = b["name"].split("/")[:4]
            ours[(cfg, "default" if mode == "fp32" else mode)] = b
except (OSError, ValueError) as e:
    print("bench_model results unreadable:", e)
theirs = {}
try:
    for line in open(sys.argv[2]):
        if line.startswith("{"):
            r = json.loads(line)
            theirs[(r["cfg"], "bf16cl" if r["amp_bf16"] else "default")] = r
except OSError as e:
    print("torch_step results unreadable:", e)
print(f"{'step (10 pairs of 128x128x32)':<34}{'hdssl ms':>10}{'peak GiB':>10}{'fwd/bwd/opt ms':>18}{'PyTorch ms':>12}{'peak GiB':>10}{'speed-up':>10}")
for cfg in ("hdssl", "vox2vec"):
    for mode in ("default", "bf16cl"):
        o, t = ours.get((cfg, mode)), theirs.get((cfg, mode))
        ms = o["real_time"] if o else float("nan")
        phases = f"{o['fwd_ms']:.0f}/{o['bwd_ms']:.0f}/{o['opt_ms']:.0f}" if o else "-"
        tms = t["median_ms"] if t else float("nan")
        print(f"{cfg + ' ' + mode:<34}{ms:>10.1f}{(o or {}).get('peak_GiB', float('nan')):>10.1f}{phases:>18}"
              f"{tms:>12.1f}{(t or {}).get('peak_gib') or float('nan'):>10.1f}{tms / ms if ms == ms and ms > 0 else float('nan'):>10.2f}")
lt, fl = ours.get(("hdssl", "bf16cl_libtorch_adam")), ours.get(("hdssl", "bf16cl"))
if lt and fl:
    print(f"hdssl bf16cl clip + Adam: flat {fl['opt_ms']:.1f} ms (step {fl['real_time']:.1f}) vs LibTorch "
          f"{lt['opt_ms']:.1f} ms (step {lt['real_time']:.1f})")
tuned = {c: theirs.get((c, "bf16cl"), {}).get("median_ms") for c in ("hdssl", "vox2vec")}
print("targets: hdssl <= 110 ms and vox2vec <= 75 ms, each <= half of PyTorch's bf16cl step:", tuned)
PY
  pretrain_end_to_end "$bin"
  echo "=== done after $((SECONDS - start))s"
  ls -la "$OUT"
  sleep 1  # let tee flush the log
}

case "${1:-}" in
  prepare) prepare ;;
  run) run all ;;
  pretrain) run pretrain ;;
  *)
    echo "usage: $0 prepare|run|pretrain" >&2
    exit 2
    ;;
esac
