#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs on a fresh machine:
# the wasm32-wasip2 target (plugins are compiled from source by the test
# build) and the Python packages of the client-compatibility tests.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

rustup target add wasm32-wasip2
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

cargo test --release --workspace "$@"
