#!/bin/bash
# Issue #25, part 2: the judged runs of a declared alpha rule (docs/bild.md), all started at once with
# one thread each at nice 15: SOTS-outdoor with noise and with swapped targets (96 px, 300 steps),
# SOTS-indoor with noise targets (64 px, 1,000 steps), seed 0, and the effective sample size on clean
# data (configs/bild/aod-net-claim.yaml). Run from the repository root with the environment active:
#
#   bash benchmarks/bild_rule_runs.sh OUT ALPHA "RUNS" [--set bild.KEY=VALUE ...]
#
# RUNS: any of bild, plain, plain_clean_only (the plain runs do not depend on the rule).
# The three rules of docs/bild.md:
#   bash benchmarks/bild_rule_runs.sh runs/bild-issue25 0.3 "bild plain plain_clean_only" --set bild.ess=0.5 --set bild.relative=true
#   bash benchmarks/bild_rule_runs.sh runs/bild-memory 0.3 bild --set bild.ess=0.5 --set bild.memory=true
#   bash benchmarks/bild_rule_runs.sh runs/bild-consistency 0.2 bild --set bild.ess=0.5 --set bild.consistency=true --set bild.lr=1e-4
cd "$(dirname "$0")/.." || exit 1
O=$1; A=$2; RUNS=$3; shift 3
mkdir -p "$O"
N="nice -n 15 env OMP_NUM_THREADS=1"
for r in $RUNS; do
  for c in noise swap; do
    $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_outdoor --corruption $c \
      --seed 0 --steps 300 --runs "$r" --alpha "$A" "$@" --out "$O/outdoor-$c-$r" > "$O/outdoor-$c-$r.log" 2>&1 &
  done
  $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_indoor --corruption noise \
    --size 64 --steps 1000 --seed 0 --runs "$r" --alpha "$A" "$@" --out "$O/indoor-noise-$r" > "$O/indoor-noise-$r.log" 2>&1 &
done
$N nohup python benchmarks/bild_real.py ess --config configs/bild/aod-net-claim.yaml --seeds 0 --set "bild.alpha=$A" "$@" \
  > "$O/clean-ess.log" 2>&1 &
wait
