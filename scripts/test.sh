#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs on a fresh machine:
# the wasm32-wasip2 target (plugins are compiled from source by the test
# build), Mesa's software Vulkan driver, the Python packages of the
# client-compatibility tests, and the aarch64 target with qemu-user for the
# CPU kernels' tests on an emulated aarch64 CPU.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The toolchain rust-toolchain.toml pins, with the wasm32-wasip2 target and
# the components it lists; a no-op once it is installed. Without
# --no-self-update rustup would also replace itself with whatever version
# its server offers.
rustup toolchain install --no-self-update
# Installs the Debian packages named unless all are installed already.
apt_install() {
    dpkg -s "$@" >/dev/null 2>&1 && return
    local sudo
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}
# A software Vulkan device (Mesa lavapipe) so the GPU backend's tests run
# on machines without a GPU; they fail, not skip, when no adapter exists.
apt_install mesa-vulkan-drivers
# Debian's chromium and its chromedriver for the console's browser test
# (tests/tests/console.rs, driven with selenium from tests/requirements.txt).
apt_install chromium chromium-driver
# curl for the Flask-style route's `curl -F` test (tests/tests/openai.rs).
apt_install curl
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
# The plugin-author toolchains (tests/tests/authoring.rs): `edgeserve build`
# installs componentize-py into a venv and componentize-js/jco with npm on
# first use, into ~/.cache/edgeserve/toolchains; they need python3-venv and
# Node.js with npm.
{ python3 -m venv --help && command -v npm; } >/dev/null 2>&1 || apt_install python3-venv nodejs npm
# qemu-user and an aarch64 cross linker, for the CPU kernels' tests on an
# emulated aarch64 edge node (the last step below).
apt_install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
rustup target add aarch64-unknown-linux-gnu
# all-MiniLM-L6-v2's pretrained weights for the minilm test (a no-op once there).
scripts/fetch-minilm.sh

# A test binary still running after 20 minutes is hung (the slowest, the
# plugin-authoring suite, takes a few minutes on a cold machine): print its
# threads' stacks and kill it, so the run fails saying where instead of
# running out CI's time.
hang_limit_s="${EDGESERVE_TEST_HANG_S:-1200}"
watch_for_hangs() {
    # The sleep holds no output open: a caller reading ours to its end
    # would otherwise wait out the last one after this loop is killed.
    while sleep 30 </dev/null >/dev/null 2>&1; do
        for pid in $(pgrep -f '/release/deps/[a-z_0-9]+-[0-9a-f]{16}( |$)' || true); do
            age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
            [ -n "$age" ] && [ "$age" -gt "$hang_limit_s" ] || continue
            echo "=== hung for ${age} s, killed: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" >&2
            if command -v gdb >/dev/null; then
                timeout 60 gdb -p "$pid" -batch -ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)' >&2 || true
            fi
            kill -9 "$pid" 2>/dev/null || true
        done
    done
}
watch_for_hangs &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT

cargo test --release --workspace "$@"
# The plugins' own unit tests (the SDK, minilm's tokenizer, the ONNX
# handler's graph analysis), natively: they form a workspace of their own.
cargo test --manifest-path plugins/Cargo.toml -p edgeserve-sdk -p minilm -p onnx
# The CPU backend as an aarch64 edge node runs it, under qemu-user: there
# the x86 kernels are not compiled in and every op takes its portable path
# (`cfg(not(target_arch = "x86_64"))`), which the runs above never build.
# The kernels' unit tests and the op suites that check them against plain
# references; `deadline.rs` (timing, not arithmetic) is left to the native
# run.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
    cargo test --release --target aarch64-unknown-linux-gnu -p edgeserve-tensor \
    --lib --test cpu_ops --test ops --test shape_properties --test compute_threads --test placement
# The whole server as an aarch64 edge node runs it: cross-built, under
# qemu-user, serving fresh builds of the example plugins, it answers every
# shipped request (gpt2's aside) as the x86 build does.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target aarch64-unknown-linux-gnu -p edgeserve
python3 tests/python/aarch64_serve.py \
    "${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/edgeserve"
