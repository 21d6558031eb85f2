#!/usr/bin/env bash
# Builds every plugin in plugins/ to a WebAssembly component (wasm32-wasip2,
# release) and installs the example ones into the example model repository
# as examples/models/<name>/1/model.wasm.
#
# Usage: scripts/build-plugins.sh        (from any directory)
# Env:   CARGO_TARGET_DIR  where the plugins are built (default plugins/target)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/plugins/target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
# Run from the repo so rustup honours rust-toolchain.toml for both commands.
cd "$repo"

# Idempotent: the toolchain rust-toolchain.toml pins, with its wasm target
# (rustup itself left as it is).
rustup toolchain install --no-self-update

cargo build --release --target wasm32-wasip2 \
    --manifest-path "$repo/plugins/Cargo.toml" --target-dir "$target_dir"

out="$target_dir/wasm32-wasip2/release"
# Every example model is served by the plugin of the same name.
for config in "$repo"/examples/models/*/config.toml; do
    name="$(basename "$(dirname "$config")")"
    dest="$repo/examples/models/$name/1/model.wasm"
    [ -f "$out/$name.wasm" ] || { echo "examples/models/$name has no plugin plugins/$name" >&2; exit 1; }
    mkdir -p "$(dirname "$dest")"
    cp "$out/$name.wasm" "$dest"
    echo "installed $dest ($(wc -c <"$dest") bytes)"
done
echo "test-only components (e.g. faulty.wasm) are in $out"
