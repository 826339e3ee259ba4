#!/bin/bash
# issue #25: the judged runs of the alpha rule declared in docs/bild.md at 03:16 UTC, started at once,
# at nice 15 with one thread each; run from the repository root with the environment active. The rule's
# values were the defaults when they ran; they are spelled out below (RULE) so that this repeats them.
cd "$(dirname "$0")/.."
O=runs/bild-issue25
mkdir -p $O
RULE="--set bild.alpha=0.3 --set bild.ess=0.5 --set bild.relative=true"
N="nice -n 15 env OMP_NUM_THREADS=1"
for c in noise swap; do
  for r in bild plain plain_clean_only; do
    $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_outdoor --corruption $c --seed 0 --steps 300 --runs $r --alpha 0.3 $RULE --out $O/outdoor-$c-$r > $O/outdoor-$c-$r.log 2>&1 &
  done
done
for r in bild plain plain_clean_only; do
  $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_indoor --corruption noise --size 64 --steps 1000 --seed 0 --runs $r --alpha 0.3 $RULE --out $O/indoor-noise-$r > $O/indoor-noise-$r.log 2>&1 &
done
$N nohup python benchmarks/bild_real.py ess --config configs/bild/aod-net-claim.yaml --seeds 0 $RULE > $O/clean-ess.log 2>&1 &
wait
