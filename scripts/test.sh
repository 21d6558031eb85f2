#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs on a fresh machine:
# the wasm32-wasip2 target (plugins are compiled from source by the test
# build), Mesa's software Vulkan driver and the Python packages of the client-compatibility tests.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

rustup target add wasm32-wasip2
# A software Vulkan device (Mesa lavapipe) so the GPU backend's tests run
# on machines without a GPU; they fail, not skip, when no adapter exists.
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mesa-vulkan-drivers
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
# all-MiniLM-L6-v2's pretrained weights for the minilm test (a no-op once there).
scripts/fetch-minilm.sh

cargo test --release --workspace "$@"
