#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the requirements, and real Fashion-MNIST
# from Debian's dataset-fashion-mnist where apt is available (elsewhere torchvision downloads it).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -r requirements.txt

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    if $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
        echo "setup: Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"
    else
        echo "setup: could not install dataset-fashion-mnist with apt; torchvision will download Fashion-MNIST instead"
    fi
fi
.venv/bin/python -c "import torch, torchvision, lotterypools; print(f'setup: torch {torch.__version__}, torchvision {torchvision.__version__}, lotterypools {lotterypools.__version__}')"
