#!/usr/bin/env bash
# visual study over copies of runs/cpu/{standard,pgd} (results/visual_cifar10_cpu), the settings of its first study.sh
set -euo pipefail
export PYTHONPATH=/work/wt/hcifar PATH=/work/venv/bin:$PATH OMP_NUM_THREADS=1 XAIROBUST_DATA=/work/data
W=/work/runs/vis
cd $W
for r in "$@"; do mkdir -p runs/$r; cp /work/runs/cpu/$r/{run.json,model.safetensors,config.yaml} runs/$r/; done
T="/usr/bin/time -a -o $W/times.log -f %C|%e|%U|%S"
INV="--n 30 --steps 1000"; GEN="--n 20"; FEAT="--n 5 --steps 400 --pool 2000"; FID="--real 200"
for r in "$@"; do
  $T xairobust visualize --run runs/$r --kind inversion --preset quick --seed 0 --data-dir /work/data $INV -q
  $T xairobust visualize --run runs/$r --kind generation --preset quick --seed 0 --data-dir /work/data $GEN -q
  $T xairobust visualize --run runs/$r --kind feature --preset quick --seed 0 --data-dir /work/data $FEAT -q
  for ext in run:$W/extractor_s1 run:$W/runs/standard; do
    $T xairobust fid --run runs/$r --extractor $ext --data-dir /work/data $FID -q
  done
done
[ "${REPORT:-0}" = 1 ] && $T xairobust report runs/standard runs/pgd --out $W/OUT --formats png,pdf --baseline Standard -q
echo vis-done
