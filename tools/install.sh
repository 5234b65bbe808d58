#!/usr/bin/env bash
# One-command install of sam_detr and what it needs, into the Python that runs this script
# (python3, or $PYTHON). Safe to run again: each step is skipped when its package is already there.
#
#   1. torch and its matching torchvision, where absent   ($TORCH_SPEC, default torch==2.14.1 torchvision==0.29.1)
#   2. the other dependencies                              (requirements.txt)
#   3. detectron2, where absent, from its source repository (it is not on PyPI). Without FORCE_CUDA,
#      whatever this shell has (detectron2's CUDA build needs the cuBLAS / cuSPARSE headers that a
#      minimal toolkit lacks; it still builds its CUDA ops where a GPU is visible): D2_FORCE_CUDA=1
#      builds them with FORCE_CUDA=1
#   4. the `deploy` extra (onnx, onnxscript, onnxruntime: ONNX export and ONNX Runtime; setup.py's
#      DEPLOY_REQUIRES), where absent
#   5. this package, with its compiled extension sam_detr._C: its CUDA kernels too wherever a CUDA
#      toolkit is found (CUDA_HOME with bin/nvcc; no GPU needed), FORCE_CUDA=1 to require them,
#      FORCE_CUDA=0 to leave them out; TORCH_CUDA_ARCH_LIST picks the architectures (default: the
#      visible GPUs', or with none visible the list in setup.py; README, Compiled ops)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip"
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_REPO=${D2_REPO:-https://github.com/facebookresearch/detectron2.git}

say() { printf '[install] %s\n' "$*"; }

if $PY -c "import torch, torchvision" >/dev/null 2>&1; then
  say "torch $($PY -c 'import torch; print(torch.__version__)') and torchvision already installed"
else
  say "installing $TORCH_SPEC"
  $PIP install $TORCH_SPEC
fi

say "installing the other dependencies (requirements.txt)"
$PIP install -q -r requirements.txt

if $PY -c "import detectron2, detectron2._C" >/dev/null 2>&1; then
  say "detectron2 $($PY -c 'import detectron2; print(detectron2.__version__)') already installed"
elif git ls-remote --exit-code "$D2_REPO" HEAD >/dev/null 2>&1; then
  if [[ "${D2_FORCE_CUDA:-0}" == 1 ]]; then
    say "installing detectron2 from $D2_REPO with FORCE_CUDA=1 (compiles its C++ and CUDA ops: a few minutes)"
    FORCE_CUDA=1 $PIP install --no-build-isolation "git+$D2_REPO"
  else
    say "installing detectron2 from $D2_REPO (compiles its C++ ops: a few minutes)"
    env -u FORCE_CUDA $PIP install --no-build-isolation "git+$D2_REPO"
  fi
else
  cat <<MSG
[install] ------------------------------------------------------------------------------------
[install] detectron2 is NOT installed: its repository ($D2_REPO) cannot be reached.
[install] detectron2 is not on PyPI. Install it from a copy of its source, then run this again:
[install]     git clone $D2_REPO            (on a machine that can reach it)
[install]     $PY -m pip install --no-build-isolation ./detectron2
[install] Until then sam_detr.layers works, and the tests that need detectron2 are skipped.
[install] ------------------------------------------------------------------------------------
MSG
fi

if $PY -c "import onnx, onnxscript, onnxruntime" >/dev/null 2>&1; then
  say "onnx, onnxscript and onnxruntime already installed (the deploy extra)"
else
  # setup.py's list, read without running setup() (it builds only under __main__)
  DEPLOY_REQUIRES=$($PY -c "import setup; print(' '.join(setup.DEPLOY_REQUIRES))")
  say "installing the deploy extra: $DEPLOY_REQUIRES"
  $PIP install -q $DEPLOY_REQUIRES
fi

if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  # torch guesses CUDA_HOME from nvcc's location, which is wrong when nvcc is a wrapper elsewhere
  export CUDA_HOME=/usr/local/cuda
fi
say "building sam_detr and its extension sam_detr._C (FORCE_CUDA=${FORCE_CUDA:-unset: CUDA kernels where a toolkit is found})"
$PIP install --no-build-isolation --no-deps -e .
$PY -c "import sam_detr._C as C; print('[install] sam_detr._C imported; CUDA kernels:', C.with_cuda())"
