#!/bin/bash
# The recipe of the shipped world model (thinkdraw/assets), on a 2-core CPU in under 2 hours:
#   1. the VQ image tokenizer: patch-local encoder and codebook fixed, the decoder trained (2 threads, 26 min);
#   2. the base policy, prompt -> image (1 thread, 80 min), and, from base's step-400 checkpoint,
#      SFT, prompt -> plan -> image (1 thread, 72 min), the two side by side;
#   3. fp16 copies of the three checkpoints into thinkdraw/assets.
# Both policies train in float32 (--no-bf16): on this 2-core CPU (avx512_bf16, no AMX) a step under
# bfloat16 autocast took 1.5-1.7x as long.
# Usage: recipes/world.sh [RUNS_DIR [VQ]]   (default runs/; VQ: an existing VQ checkpoint to draw with,
# e.g. thinkdraw/assets/vq, which skips step 1 and leaves the shipped VQ as it is)
set -euo pipefail
RUNS=${1:-runs}
VQ=${2:-}
export OMP_WAIT_POLICY=PASSIVE  # threads that sleep while waiting: the two policy runs share the cores
ASSETS=$(python -c "import thinkdraw, pathlib; print(pathlib.Path(thinkdraw.__file__).parent / 'assets')")

parts="base sft"
if [ -z "$VQ" ]; then
    thinkdraw train vq --out "$RUNS/vq" --steps 3000 --save-every 500 --max-minutes 26 --threads 2
    VQ="$RUNS/vq/checkpoint"
    parts="vq base sft"
fi

thinkdraw train policy base "$VQ" --out "$RUNS/base" --batch-size 16 --steps 2500 \
    --max-minutes 80 --save-every 100 --threads 1 --no-bf16 &
base=$!
step() { python -c "import json; print(json.load(open('$RUNS/base/checkpoint/thinkdraw.json'))['step'])" 2>/dev/null || echo 0; }
until [ "$(step)" -ge 400 ]; do sleep 10; done
cp -r "$RUNS/base/checkpoint" "$RUNS/base-400"
thinkdraw train policy sft "$RUNS/base-400" --out "$RUNS/sft" --batch-size 16 --steps 2150 \
    --max-minutes 72 --save-every 100 --threads 1 --no-bf16
wait $base

for part in $parts; do
    rm -rf "$ASSETS/$part"
    thinkdraw train export "$RUNS/$part/checkpoint" "$ASSETS/$part" --dtype float16
done
