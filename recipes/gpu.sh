#!/bin/bash
# What runs on a lent GPU (one call of the device tool, from the repository root), in two stages:
#
#   recipes/gpu.sh sft   OUT [MINUTES]   an SFT chunk from the shipped SFT, three settings side by side on the one
#                                        GPU for MINUTES (3.5) each, batch 128 (8x the CPU chunks'): A lr 3e-4,
#                                        B lr 1e-3, C lr 3e-4 with 15% second tries (PARM++'s revise examples);
#                                        each scored on 120 val prompts x 2 (ground-truth plans and its own, CFG
#                                        2), the best (given-plan + own-plan score on all tasks) on the whole test split x 4;
#                                        the fp16 exports come back as OUT/sft_{a,b,c}.tgz. Beside the chunks:
#                                        benchmarks/grpo_memory.py at Janus-Pro-1B's shape (its own GPU peaks)
#   recipes/gpu.sh speed OUT             benchmarks/engine_speed.py at Janus-Pro-1B's shape, batch 8 and 32
#
# The steps of a chunk are set from a 51-step calibration run so that its cosine schedule ends inside MINUTES.
# The results are packed after each phase, so a call cut short still returns what finished. For a dry run on a CPU:
#   DEVICE=cpu BATCH=4 VAL=4 TEST=4 MEMORY="--hidden 64 --layers 2 --text-vocab 500" recipes/gpu.sh sft /tmp/o 0.3
set -uo pipefail
STAGE=${1:?sft or speed}
OUT=${2:?out folder}
MINUTES=${3:-3.5}
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-128} VAL=${VAL:-120} TEST=${TEST:-474} MEMORY=${MEMORY:-}
RUNS=/tmp/gpu_runs LOGS=/tmp/gpu_logs  # the logs and JSON reports come back packed, as OUT/results.tgz
mkdir -p "$OUT" "$RUNS" "$LOGS"
pack() { tar czf "$OUT/results.tgz" -C "$LOGS" .; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
td() { python3 -m thinkdraw "$@"; }

case "$STAGE" in
sft)
    common=(--batch-size "$BATCH" --save-every 1000000 --device "$DEVICE" --threads 4 --warmup 50)
    td train policy sft thinkdraw/assets/sft --out "$RUNS/cal" --lr 3e-4 --steps 51 "${common[@]}" >"$LOGS/cal.log" 2>&1
    steps=$(python3 - "$RUNS/cal/log.jsonl" "$MINUTES" <<'EOF'
import json, sys
at = {r["step"]: r["minutes"] for r in map(json.loads, open(sys.argv[1])) if "minutes" in r}
per_step = (at[50] - at[25]) / 25
print(int(float(sys.argv[2]) / (per_step * 1.3)))  # three runs and the memory benchmark share the GPU
EOF
)
    echo "calibration: $steps steps in $MINUTES minutes" | tee "$LOGS/steps.txt"
    pack
    python3 benchmarks/grpo_memory.py --device "$DEVICE" $MEMORY --threads 2 --out "$LOGS/grpo_memory_h200.json" \
        >"$LOGS/grpo_memory.log" 2>&1 &
    memory=$!
    td train policy sft thinkdraw/assets/sft --out "$RUNS/a" --lr 3e-4 --steps "$steps" --max-minutes "$MINUTES" \
        "${common[@]}" >"$LOGS/a.log" 2>&1 &
    td train policy sft thinkdraw/assets/sft --out "$RUNS/b" --lr 1e-3 --steps "$steps" --max-minutes "$MINUTES" \
        "${common[@]}" >"$LOGS/b.log" 2>&1 &
    td train policy sft thinkdraw/assets/sft --out "$RUNS/c" --lr 3e-4 --revise-rate 0.15 --steps "$steps" \
        --max-minutes "$MINUTES" "${common[@]}" >"$LOGS/c.log" 2>&1 &
    wait $(jobs -p | grep -v "^$memory$")
    pack
    for run in a b c; do
        td train export "$RUNS/$run/checkpoint" "$RUNS/sft_$run" --cfg-scale 2 >>"$LOGS/$run.log" 2>&1
        tar czf "$OUT/sft_$run.tgz" -C "$RUNS" "sft_$run"
        python3 benchmarks/plan_following.py --model "$RUNS/sft_$run" --split val --prompts "$VAL" --images-per-prompt 2 \
            --cfg-scales 2 --temperatures 1.0 --reasoning plan --batch 32 --device "$DEVICE" --threads 4 \
            --out "$LOGS/val_$run.json" >"$LOGS/val_$run.log" 2>&1 &
    done
    wait
    pack
    best=$(python3 - "$LOGS" <<'EOF'
import json, sys
def score(run):
    try:
        r = json.load(open(f"{sys.argv[1]}/val_{run}.json"))
    except OSError:
        return -1
    return r["given_plans"][0]["all_tasks"] + r["own_plan"]["all_tasks"]
print(max("abc", key=score))
EOF
)
    echo "best on val: $best" | tee "$LOGS/best.txt"
    python3 benchmarks/plan_following.py --model "$RUNS/sft_$best" --split test --prompts "$TEST" --images-per-prompt 4 \
        --cfg-scales 2 --temperatures 1.0 --reasoning plan rationale --batch 32 --device "$DEVICE" --threads 8 \
        --out "$LOGS/test_best.json" >"$LOGS/test_best.log" 2>&1
    pack ;;
speed)
    python3 benchmarks/engine_speed.py --janus-pro-1b --batch 8 32 --repeats 2 --device cuda \
        --out "$LOGS/engine_speed_h200.json" 2>&1 | tee "$LOGS/engine_speed.log"
    pack ;;
*)
    echo "unknown stage $STAGE: sft or speed" >&2
    exit 2 ;;
esac
