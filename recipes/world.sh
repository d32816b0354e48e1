#!/bin/bash
# The recipe of the shipped world model (thinkdraw/assets), on a 2-core CPU in under 2 hours:
#   1. the VQ image tokenizer: patch-local encoder and codebook fixed, the decoder trained (26 min);
#   2. the base policy, prompt -> image (at most 48 min);
#   3. SFT from the base policy, prompt -> plan -> image (at most 44 min);
#   4. fp16 copies of the three checkpoints into thinkdraw/assets.
# One run at a time on both cores: two runs side by side on one thread each took about 5 s a step
# each on a 2-core machine, against 1.1 s (base) and 1.5 s (SFT) for one run on two threads.
# Both policies train in float32 (--no-bf16): on a 2-core CPU with avx512_bf16 and no AMX a step under
# bfloat16 autocast took 1.5-1.7x as long.
# Usage: recipes/world.sh [RUNS_DIR [VQ]]   (default runs/; VQ: an existing VQ checkpoint to draw with,
# e.g. thinkdraw/assets/vq, which skips step 1 and leaves the shipped VQ as it is)
set -euo pipefail
RUNS=${1:-runs}
VQ=${2:-}
export OMP_WAIT_POLICY=PASSIVE  # as in the runs whose timings are given above
ASSETS=$(python -c "import thinkdraw, pathlib; print(pathlib.Path(thinkdraw.__file__).parent / 'assets')")

parts="base sft"
if [ -z "$VQ" ]; then
    thinkdraw train vq --out "$RUNS/vq" --steps 3000 --save-every 500 --max-minutes 26 --threads 2
    VQ="$RUNS/vq/checkpoint"
    parts="vq base sft"
fi

thinkdraw train policy base "$VQ" --out "$RUNS/base" --batch-size 16 --steps 2500 \
    --max-minutes 48 --save-every 100 --threads 2 --no-bf16
thinkdraw train policy sft "$RUNS/base/checkpoint" --out "$RUNS/sft" --batch-size 16 --steps 1550 \
    --max-minutes 44 --save-every 100 --threads 2 --no-bf16

for part in $parts; do
    rm -rf "$ASSETS/$part"
    thinkdraw train export "$RUNS/$part/checkpoint" "$ASSETS/$part" --dtype float16
done
