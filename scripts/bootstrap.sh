#!/usr/bin/env bash
# hdssl set-up, build and run on a fresh Debian 12 machine.
#
#   scripts/bootstrap.sh demo    install what is missing, build the drivers the demo needs, run scripts/demo.sh
#                                (pre-training and linear probing on a cohort derived from real MRI)
#   scripts/bootstrap.sh test    install what is missing, build, run the whole test suite (CI calls this)
#   scripts/bootstrap.sh build   install what is missing and build only
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), HDSSL_SKIP_APT=1 to skip
# the package step on a machine that already has everything.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# Debian packages the build, the tests and the demo need.
#  - libopenblas0-pthread: Debian's LibTorch calls whichever libblas.so.3 is installed; the reference
#    BLAS makes its matrix products ~35x slower.
#  - mricron-data: real MRI volumes (Colin27 ch2.nii.gz, atlas label maps) for the demo and the tests.
#  - python3-nibabel: the test data it ships (NIfTI-1/-2, 4-D) and an independent reader to compare with.
#  - python3-torch: Debian's PyTorch (the same 1.13 as libtorch-dev), to check in the tests that PyTorch
#    loads the backbone weights hdssl writes with strict=True.
#  - libstb-dev: stb_image_write for the PNG training curves.
#  - libgloo-dev: the headers of c10d's Gloo backend (data-parallel training; LibTorch links libgloo).
packages=(build-essential cmake ccache zlib1g-dev
          libtorch-dev libopenblas0-pthread libeigen3-dev nlohmann-json3-dev libnifti2-dev
          libcli11-dev doctest-dev libbenchmark-dev libstb-dev libgloo-dev
          mricron-data python3-nibabel python3-torch)

install_missing() {
  [ "${HDSSL_SKIP_APT:-0}" = 1 ] && return 0
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { echo "bootstrap: all ${#packages[@]} packages present"; return 0; }
  echo "bootstrap: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD_DIR" -j"$JOBS"
}

case "$mode" in
  demo)
    install_missing
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$BUILD_DIR" -j"$JOBS" --target hdssl-make-cohort hdssl-pretrain hdssl-linear-eval
    scripts/demo.sh "$BUILD_DIR" "${DEMO_OUT:-runs/demo}"
    ;;
  test)
    install_missing
    build
    # Tests run one at a time: each executable already uses every core through LibTorch.
    ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 1500
    ;;
  build)
    install_missing
    build
    ;;
  *)
    echo "usage: $0 demo|test|build" >&2
    exit 2
    ;;
esac
