#!/usr/bin/env bash
# Streamlined: the essentials first (inversion feature distance + generation FID, independent extractor).
set -euo pipefail
export PYTHONPATH=/work/wt/visual PATH=/work/venv/bin:$PATH OMP_NUM_THREADS=1
W=/tmp/vis/cifar; R=/work/runs/cifar10_cpu
T="/usr/bin/time -a -o $W/times.log -f %C|%e|%U|%S"
N="nice -n 5"
INV="--n 30 --steps 1000"; GEN="--n 20"; FEAT="--n 5 --steps 400 --pool 2000"; FID="--real 200"
cd $W
mkdir -p runs/pgd; cp $R/pgd/run.json $R/pgd/model.safetensors $R/pgd/config.yaml runs/pgd/
while [ ! -f runs/standard/visualisations/feature.json ]; do sleep 10; done
$N $T xairobust fid --run runs/standard --extractor run:$W/extractor_s1 --data-dir /work/data $FID -q
$N $T xairobust visualize --run runs/pgd --kind inversion --preset quick --seed 0 --data-dir /work/data $INV -q
$N $T xairobust visualize --run runs/pgd --kind generation --preset quick --seed 0 --data-dir /work/data $GEN -q
$N $T xairobust fid --run runs/pgd --extractor run:$W/extractor_s1 --data-dir /work/data $FID -q
$N xairobust report runs/standard runs/pgd --out /work/wt/visual/results/visual_cifar10_cpu --formats png,pdf --baseline Standard -q
echo essentials-done
$N $T xairobust visualize --run runs/pgd --kind feature --preset quick --seed 0 --data-dir /work/data $FEAT -q
for r in standard pgd; do $N $T xairobust fid --run runs/$r --extractor run:$W/runs/standard --data-dir /work/data $FID -q; done
$N xairobust report runs/standard runs/pgd --out /work/wt/visual/results/visual_cifar10_cpu --formats png,pdf --baseline Standard -q
echo all-done
