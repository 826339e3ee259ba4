#!/bin/bash
# issue #25, part 2 (third session): the judged runs of the consistency rule declared in docs/bild.md
# ("Part 2, third session"), on the benchmarks and seeds of the first rule; only the BILD runs, since
# the plain and clean-only runs do not depend on the rule (docs/bild/issue25-*.json). Run from the
# repository root with the environment active.
cd "$(dirname "$0")/.."
O=runs/bild-consistency
mkdir -p $O
RULE="--set bild.ess=0.5 --set bild.consistency=true --set bild.lr=1e-4"
N="env OMP_NUM_THREADS=1"
for c in noise swap; do
  $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_outdoor --corruption $c --seed 0 --steps 300 --runs bild --alpha 0.2 $RULE --out $O/outdoor-$c-bild > $O/outdoor-$c-bild.log 2>&1 &
done
$N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_indoor --corruption noise --size 64 --steps 1000 --seed 0 --runs bild --alpha 0.2 $RULE --out $O/indoor-noise-bild > $O/indoor-noise-bild.log 2>&1 &
$N nohup python benchmarks/bild_real.py ess --config configs/bild/aod-net-claim.yaml --seeds 0 --set bild.alpha=0.2 $RULE > $O/clean-ess.log 2>&1 &
wait
