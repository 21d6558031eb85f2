#!/usr/bin/env bash
# The device run of issue 10's GPU figures, on a machine with an NVIDIA GPU,
# Python and PyTorch (the device tool's nvidia-h200), from the .device/ that
# bench/device/pack.sh made here. Each step's Markdown lands in $OUT:
#
#   nvidia-smi.txt         the GPU and driver
#   matmul_gflops.md       edgeserve's GPU vs CPU matmul, 256…4096³ (f32, f16),
#                          and the f32 kernel in each grid order, in turns
#   torch_sgemm.md         PyTorch FP32 SGEMM on CUDA, TF32 off (the baseline)
#   dispatch_overhead.md   per-op cost, requests on 1–8 threads at once, and a
#                          buffer freed during another request's read-back
#   gpu_vs_cpu.md          minilm batch 1/32, digits batch 64: --device gpu vs
#                          --device cpu vs PyTorch CUDA, and 1, 4 and 16
#                          clients at once on each server (bench/gpu_vs_cpu.py)
#   log.txt                everything the steps printed besides
#
# A step that fails or overruns its share is noted in log.txt and the next
# runs. About 8 minutes on an H200; the steps' limits add up to 9. Elsewhere
# (a dry run on lavapipe): OUT=dir bash bench/device/run.sh --dry, which
# keeps sizes small and skips CUDA.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
out="${OUT:?set OUT to the folder for the results}"
dry=$([ "${1:-}" = --dry ] && echo 1 || echo 0)
log="$out/log.txt"
work="$(mktemp -d)"

step() {  # step SECONDS FILE COMMAND...: runs it, stdout to $out/FILE
    local seconds=$1 file=$2
    shift 2
    echo "== $(date -u +%T) $file: $*" >>"$log"
    timeout "$seconds" "$@" >"$out/$file" 2>>"$log"
    local rc=$?
    [ $rc = 0 ] || echo "!! $file: exit $rc" | tee -a "$log"
    # A step killed at its limit: timeout's SIGTERM reached its servers
    # too, but one may still be draining requests in a graceful shutdown,
    # holding the GPU and the cores through the next step.
    pkill -KILL -f "^$work/edgeserve serve" && echo "!! $file: stopped servers it left" | tee -a "$log"
    return 0
}

if [ "$dry" = 0 ]; then
    for f in .device/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1
fi
# Python's lzma rather than xz, which the image may lack.
for f in .device/bin/*.xz; do
    bin="$work/$(basename "$f" .xz)"
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$bin"
    chmod +x "$bin"
done
# The minilm weights are made in a copy, so .device/ stays as packed.
cp -r .device/models "$work/models"
export PYTHONUNBUFFERED=1

if [ "$dry" = 0 ]; then
    step 150 matmul_gflops.md "$work/matmul_gflops" 256 512 1024 2048 4096
    step 60 torch_sgemm.md python3 bench/torch_sgemm.py
    step 90 dispatch_overhead.md "$work/dispatch_overhead"
    step 240 gpu_vs_cpu.md python3 bench/gpu_vs_cpu.py --binary "$work/edgeserve" \
        --repository "$work/models" --make-minilm-weights --requests 30
else
    step 300 matmul_gflops.md "$work/matmul_gflops" 256 512
    step 300 dispatch_overhead.md "$work/dispatch_overhead" 50
    step 600 gpu_vs_cpu.md python3 bench/gpu_vs_cpu.py --binary "$work/edgeserve" \
        --repository "$work/models" --make-minilm-weights --requests 3 --threads 2 \
        --clients 1,4 --client-requests 5
fi
rm -rf "$work"
echo "== $(date -u +%T) done" >>"$log"
