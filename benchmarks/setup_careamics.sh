#!/usr/bin/env bash
# The CAREamics peer of bench_quality.py in its own virtual environment, never in .venv (PyTorch here,
# TensorFlow there). Run on the CPU (the child hides any GPU).
#
# A plain `pip install careamics==0.3.5`, as a user would type it. careamics 0.3.5 pins
# torchvision<=0.26.0, which pins torch 2.11.0, so pip takes PyPI's torch 2.11.0 (a CUDA build, ~4 GB
# with its nvidia-* libraries). A CPU-only torch 2.13 does not work: careamics imports torchvision at
# import time, and PyPI's torchvision 0.28.0 (the release for torch 2.13) is a CUDA build whose C
# operators cannot load against a CPU torch (torchvision/_meta_registrations.py then fails:
# "operator torchvision::nms does not exist").
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${1:-$(dirname "$0")/.venv-careamics}
STAMP="$VENV/.installed"
[ -f "$STAMP" ] && exit 0
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "careamics==0.3.5"
"$VENV/bin/python" -c "import careamics, torch, torchvision; print('careamics', careamics.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
touch "$STAMP"
