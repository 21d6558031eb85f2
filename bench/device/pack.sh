#!/usr/bin/env bash
# Packs what the device run (bench/device/run.sh) needs into .device/ at the
# repository's root (git-ignored), to be carried to a GPU machine that has
# Python and PyTorch but no Rust and no network:
#
#   .device/bin/*.xz    release builds of edgeserve and the edgeserve-gpu
#                       examples matmul_gflops and dispatch_overhead,
#                       stripped and compressed (x86-64, glibc ≥ 2.35)
#   .device/models/     a model repository: linear, digits, and minilm
#                       without its 87 MB of weights (run.sh makes seeded
#                       random ones there; the tokenizer files travel)
#   .device/gl/*.deb    the Vulkan loader and GL dispatch libraries, which the
#                       machine's image lacks (its NVIDIA driver brings the
#                       Vulkan driver itself)
#
# Usage: bench/device/pack.sh    (then, with the device tool:
#        run  command="bash bench/device/run.sh"  carry=[".device"])
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
pack="$repo/.device"

scripts/fetch-minilm.sh
# Where the test build puts the plugins, so a tested tree rebuilds nothing.
CARGO_TARGET_DIR="$target/wasm-plugins" scripts/build-plugins.sh
cargo build --release -p edgeserve
cargo build --release -p edgeserve-gpu --example matmul_gflops --example dispatch_overhead

rm -rf "$pack"
mkdir -p "$pack/bin" "$pack/models" "$pack/gl"
for bin in release/edgeserve release/examples/matmul_gflops release/examples/dispatch_overhead; do
    name="$(basename "$bin")"
    strip -o "$pack/bin/$name" "$target/$bin"
    xz -T0 -6 "$pack/bin/$name"
done

cp -r examples/models/linear examples/models/digits "$pack/models/"
mkdir -p "$pack/models/minilm/1"
cp examples/models/minilm/config.toml examples/models/minilm/warmup.json "$pack/models/minilm/"
for f in model.wasm vocab.txt tokenizer.json config.json tokenizer_config.json special_tokens_map.json; do
    cp "examples/models/minilm/1/$f" "$pack/models/minilm/1/"
done

# As /work/.library/device/README.md says: amd64 packages from this
# machine's archive, unpacked over / there.
lists="$(mktemp -d)"
trap 'rm -rf "$lists"' EXIT
mkdir -p "$lists/partial"
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_opts[@]}" update -qq
(cd "$pack/gl" && apt-get "${apt_opts[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

du -sh "$pack"
