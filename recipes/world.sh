#!/bin/bash
# The recipe of the shipped world model (thinkdraw/assets), on a 2-core CPU, in chunks of at most 2 hours.
#
#   recipes/world.sh vq     RUNS      the VQ image tokenizer: patch-local encoder and codebook fixed, the decoder
#                                     trained (26 min)
#   recipes/world.sh base   RUNS VQ   the base policy, prompt -> image (at most 48 min)
#   recipes/world.sh sft    RUNS INIT [LR STEPS MINUTES REVISE]
#                                     one SFT chunk, prompt -> plan (or rationale) -> image, from INIT: a base
#                                     policy (the first chunk, lr 1e-3, 1800 steps, at most 60 min; plan-guided
#                                     positions and the rationale token are added to it) or the last chunk's
#                                     exported SFT (a later chunk: fresh optimizer, the weights go on); REVISE:
#                                     the share of second-try examples (PARM++), default 0
#   recipes/world.sh judge  RUNS [MINUTES]
#                                     the world judge: the shipped SFT's samples of 1500 train prompts (2 each),
#                                     then a tiny LLaVA trained on them and on 1000 rendered scenes (at most 50 min)
#   recipes/world.sh detector RUNS [MINUTES]
#                                     the learned detector of the rule judge (--judge world-rules): the shipped SFT's
#                                     samples of 1500 train prompts and the shipped GRPO's of 500 (2 each), 4000
#                                     rendered scenes, each image also partial and scenes also token-mixed, labelled
#                                     by the exact detector (at most 40 min)
#   recipes/world.sh grpo   RUNS [REWARD MINUTES INIT]
#                                     GRPO from the shipped SFT (or the policy INIT; the run folder is then named
#                                     after INIT's run too), rewarded by REWARD (default geneval: GenEval's rules over
#                                     the exact detector; binary, got, pi...: the shipped world judge), 4 prompts x 8
#                                     rollouts a batch, 2 updates each, no guidance (CFG 1; runs before stop 28: CFG 2), at most MINUTES (45); any reward but
#                                     geneval also logs held-back val prompts' reward and exact score. REWARD plan
#                                     (GenEval's rules on the plan) or 'plan*layout' (times the share of the world's
#                                     layout rules its boxes keep: square, 12-24 px, 2 px apart): the plan alone trained
#                                     (--plan-only, no image drawn), KL 0.1 to the start, 16 prompts x 8 plans a batch,
#                                     560 updates, held-back images drawn greedily without guidance, as the shipped
#                                     models draw (run folder grpo-plan-layout for 'plan*layout')
#   recipes/world.sh dpo    RUNS [REWARD ROUNDS]
#                                     iterative DPO from the shipped SFT: ROUNDS (2) rounds of 128 prompts x 4 samples,
#                                     the best and worst by REWARD (default pi: the world judge's P(yes)) a pair, 40
#                                     updates of 8 pairs each; RUNS/dpo/rounds/1 is plain DPO
#   recipes/world.sh export RUNS PART [CFG PLAN_CFG PLAN_TEMPERATURE]
#                                     an fp16 copy of RUNS/PART/checkpoint into thinkdraw/assets/NAME, NAME being PART
#                                     up to its first "-" (PART: vq, base, sft, judge, detector, or a run such as grpo-geneval;
#                                     CFG: the guidance scale generation uses with a policy; PLAN_CFG and
#                                     PLAN_TEMPERATURE: its guidance scale and image-token temperature after a plan
#                                     with boxes; the shipped SFT and GRPO: 2 1 0, greedy image tokens without
#                                     guidance after a plan, CFG 2 and temperature 1 without one)
#
# What ran for the shipped models (all on this 2-core CPU; no GPU was lent):
#   vq and base: two stops before this one (the VQ 26 min, base 2500 steps); unchanged since.
#   sft chunk 1: `recipes/world.sh sft /work/runs thinkdraw/assets/base`, then `export /work/runs sft`.
#   sft chunk 2: `recipes/world.sh sft /work/runs thinkdraw/assets/sft 3e-4 650 22` (577 steps in 22 min), then
#                `export /work/runs sft 2`.
#   sft chunk 3: `recipes/world.sh sft /work/runs thinkdraw/assets/sft 3e-4 2300 85` (all 2300 steps, 72.7 min;
#                final loss 0.266: text CE 0.91, image CE 0.13 nats/token), then `export /work/runs sft 2`.
#   sft chunk 4: `recipes/world.sh sft /work/runs thinkdraw/assets/sft 3e-4 2500 95` (2055 of the 2500 steps in
#                the 95 min: rollouts and a judge trained on the same two cores; last logged loss 0.23), then
#                `export /work/runs sft 2`.
#   sft chunk 5: `recipes/world.sh sft /work/runs thinkdraw/assets/sft 3e-4 900 37 0.3` (862 of the 900 steps in
#                the 37 min; 30% of spoilt examples as second tries), then `export /work/runs sft 2`. The judge,
#                GRPO and DPO runs below started from chunk 4 (the judge learned from chunk 3's samples).
#   sft sampling defaults (stop 26): the chunk-5 SFT re-exported from itself with greedy image tokens and no
#                guidance after a plan, its weights unchanged bit for bit (`thinkdraw train export thinkdraw/assets/sft
#                /tmp/sft --cfg-scale 2 --plan-cfg-scale 1 --plan-temperature 0`, copied back); a new chunk:
#                `export /work/runs sft 2 1 0`.
#   judge: `recipes/world.sh judge /work/runs` on chunk 3's samples (1 thread each, beside chunk 4), then
#                `export /work/runs judge`, at commit 4ee9532: its trainer then averaged the answer loss over all
#                tokens of a batch; since c56c45d it averages per example, so today's command trains a judge of the
#                newer loss (checkout 4ee9532 for the trainer the shipped one ran with).
#   grpo (assets/grpo, `--model grpo`, since stop 27): `recipes/world.sh grpo /work/s27 'plan*layout' 44` from the
#                chunk-5 SFT (stopped by its 44-minute budget at update 385), then `export /work/s27 grpo-plan-layout
#                2 1 0`. At stop 26: `recipes/world.sh grpo /work/s26 plan 44` (out /work/s26/grpo-plan-kl45; all 560
#                updates in 41.0 min), exported the same way from grpo-plan.
#   grpo until stop 26 (not shipped now): the geneval stage's command with out /work/grpo/geneval from the chunk-4
#                SFT (checkout b4fe550 for that start; all 180 updates in 34.1 min), exported with CFG 2; resumed to
#                240 updates (`--steps 240 --max-minutes 11 --resume`, 45 min in all) it scored no better. From chunk
#                5, `recipes/world.sh grpo /work/rl5` (169 updates in the 45 min) scored lower (all tasks 0.565
#                against 0.617). GRPO on the plan alone from chunk 5, with the recipe of commit 2b10ae8 (CFG 2,
#                temperature 1, 240 updates): `recipes/world.sh grpo /work/rl6 plan 20` (all 240 updates in 18.3
#                min), and the same command with --kl-beta 0.1 --held-out-every 40 --max-minutes 18, out
#                /work/rl6/grpo-plan-kl; then `recipes/world.sh grpo /work/rl6 geneval 20
#                /work/rl6/grpo-plan-kl/checkpoint` (91 updates in 20 min).
#   detector (assets/detector, `--judge world-rules`): `recipes/world.sh detector /work/det` as written (its rollouts
#                went to /work/det/roll-train and roll-grpo), then `export /work/det detector`.
#   dpo: `recipes/world.sh dpo /work/rl` (2 rounds, 12.3 min) from chunk 4, and `recipes/world.sh dpo /work/s27`
#                from chunk 5 (2 rounds, 11.0 min), not shipped.
#   grpo on the world judge from chunk 5 (stop 28, not shipped; CFG 1): `recipes/world.sh grpo /work/s28 binary 22`,
#                `... got 22`, `... "pi+0.5*sem+0.5*spa+ri" 18` and `... ri 18`, each stopped by its budget.
#   grpo plan x layout with adaptive entropy (stop 28, not shipped): the plan stage's command with out
#                /work/s28/grpo-plan-layout-entropy, --max-minutes 15 --entropy --entropy-text-target 0.914
#                --entropy-text-step 0.001 --entropy-text-limit 0.05.
#   grpo on the world judge from chunk 4 at CFG 2 (not shipped; the recipe of commit 0b2ef4c): `recipes/world.sh grpo /work/rl binary 40` (stopped at 38.0 min by 21
#                batches in a row without signal; 112 updates, its update-100 checkpoint evaluated) and
#                `recipes/world.sh grpo /work/rl got 40` (all 180 updates in 37.1 min).
#                GoT-R1's ablation: the grpo stage's command with --reward "pi+0.5*sem+0.5*spa+ri" (sum) and
#                --reward ri, each --max-minutes 25 (97 and 105 updates), out /work/rl/grpo-sum and /work/rl/grpo-ri.
#   sft for PARM++ (not shipped): `recipes/world.sh sft /work/runs thinkdraw/assets/sft 3e-4 520 20 0.3` (all 520
#                steps in 11.5 min), the policy benchmarks/verifiers.py --rounds 2 ran PARM++ on.
#   judge ablation (not shipped): benchmarks/judge_ablation.py, 10 min a variant; none beat the shipped judge.
#   recipes/gpu.sh holds an SFT chunk for a lent GPU; none could be had yet, so it has not run.
# A chunk's weights are committed when it ends (thinkdraw/assets/sft), so an interrupted session loses at most
# one chunk; rerunning the same commands reproduces the shipped model.
# One run at a time on both cores: two side by side on one thread each took about 5 s a step each. Policies
# train in float32 (--no-bf16): under bfloat16 autocast a step took 1.5-1.7x as long on this CPU.
set -euo pipefail
STAGE=${1:?vq, base, sft, judge, detector, grpo, dpo or export}
RUNS=${2:-runs}
export OMP_WAIT_POLICY=PASSIVE  # as in the runs whose timings are given above
ASSETS=$(python -c "import thinkdraw, pathlib; print(pathlib.Path(thinkdraw.__file__).parent / 'assets')")

case "$STAGE" in
vq)
    thinkdraw train vq --out "$RUNS/vq" --steps 3000 --save-every 500 --max-minutes 26 --threads 2 ;;
base)
    thinkdraw train policy base "${3:?VQ checkpoint}" --out "$RUNS/base" --batch-size 16 --steps 2500 \
        --max-minutes 48 --save-every 100 --threads 2 --no-bf16 ;;
sft)
    rm -rf "$RUNS/sft"
    thinkdraw train policy sft "${3:?INIT policy}" --out "$RUNS/sft" --batch-size 16 --lr "${4:-1e-3}" \
        --steps "${5:-1800}" --max-minutes "${6:-60}" --revise-rate "${7:-0}" --save-every 100 --threads 2 --no-bf16 ;;
judge)
    thinkdraw world rollouts "$RUNS/rollouts" --split train --prompts 1500 --per-prompt 2 --threads 2
    thinkdraw train judge --rollouts "$RUNS/rollouts" --scenes 1000 --out "$RUNS/judge" --steps 2000 \
        --batch-size 32 --lr 1e-3 --max-minutes "${3:-50}" --save-every 200 --threads 2 ;;
detector)
    thinkdraw world rollouts "$RUNS/rollouts" --split train --prompts 1500 --per-prompt 2 --threads 2
    thinkdraw world rollouts "$RUNS/rollouts-grpo" --model grpo --split train --prompts 500 --per-prompt 2 --threads 2
    thinkdraw train detector --rollouts "$RUNS/rollouts" --rollouts "$RUNS/rollouts-grpo" --scenes 4000 --out "$RUNS/detector" \
        --steps 4000 --batch-size 32 --lr 2e-3 --max-minutes "${3:-25}" --save-every 250 --threads 2 ;;
grpo)
    reward=${3:-geneval}
    init=${5:-$ASSETS/sft}
    out="$RUNS/grpo-${reward//\*/-}${5:+-from-$(basename "$(dirname "$init")")}"
    extra=(--steps 180 --cfg-scale 1 --save-every 20)  # no guidance: ReasonGen-R1's, and the SFT's after a plan
    [ "$reward" = geneval ] || extra+=(--held-out-every 20 --held-out-prompts 48)
    if [[ "$reward" == plan* ]]; then  # the plan alone, kept near the SFT by KL; held-back images drawn as it draws them
        extra=(--steps 560 --plan-only --prompts-per-batch 16 --kl-beta 0.1 --cfg-scale 1 --temperature 0
            --save-every 40 --held-out-every 40 --held-out-prompts 48)
    fi
    rm -rf "$out"
    thinkdraw train grpo "$init" --out "$out" --reward "$reward" --max-minutes "${4:-45}" --threads 2 "${extra[@]}" ;;
dpo)
    reward=${3:-pi}
    rm -rf "$RUNS/dpo-$reward"
    thinkdraw train dpo "$ASSETS/sft" --out "$RUNS/dpo-$reward" --reward "$reward" --rounds "${4:-2}" \
        --prompts-per-round 128 --candidates 4 --steps-per-round 40 --batch-size 8 --lr 5e-5 --cfg-scale 2 \
        --save-every 20 --held-out-every 20 --held-out-prompts 48 --threads 2 ;;
export)
    part=${3:?vq, base, sft, judge, detector or a run folder such as grpo-geneval}
    name=${part%%-*}
    rm -rf "${ASSETS:?}/$name"
    thinkdraw train export "$RUNS/$part/checkpoint" "$ASSETS/$name" --dtype float16 ${4:+--cfg-scale "$4"} \
        ${5:+--plan-cfg-scale "$5"} ${6:+--plan-temperature "$6"} ;;
*)
    echo "unknown stage $STAGE: vq, base, sft, judge, detector, grpo, dpo or export" >&2; exit 2 ;;
esac
