#!/usr/bin/env bash
# Builds the example plugins and the host, then serves examples/models at
# http://127.0.0.1:8000. Extra arguments go to `edgeserve serve`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
CARGO_TARGET_DIR= scripts/build-plugins.sh
# The minilm example's pretrained weights (a no-op once they are there).
scripts/fetch-minilm.sh
exec cargo run --release -p edgeserve -- serve --model-repository examples/models "$@"
