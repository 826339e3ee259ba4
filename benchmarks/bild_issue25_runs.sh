#!/bin/bash
# issue #25 judged runs (rule declared in docs/bild.md at 03:16 UTC), all at nice 15, one thread
cd /work/main
. .venv/bin/activate
O=runs/bild-issue25
N="nice -n 15 env OMP_NUM_THREADS=1"
for c in noise swap; do
  for r in bild plain plain_clean_only; do
    $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_outdoor --corruption $c --seed 0 --steps 300 --runs $r --out $O/outdoor-$c-$r > $O/outdoor-$c-$r.log 2>&1 &
  done
done
for r in bild plain plain_clean_only; do
  $N nohup python benchmarks/bild_noisy_labels.py --source ../shared/data/train/sots_indoor --corruption noise --size 64 --steps 1000 --seed 0 --runs $r --out $O/indoor-noise-$r > $O/indoor-noise-$r.log 2>&1 &
done
$N nohup python benchmarks/bild_real.py ess --config configs/bild/aod-net-claim.yaml --seeds 0 > $O/clean-ess.log 2>&1 &
wait
