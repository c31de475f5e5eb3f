#!/usr/bin/env bash
# manipulation study over copies of runs/cpu/{standard,pgd} (results/manipulation_cifar10_cpu)
set -euo pipefail
export PYTHONPATH=/work/wt/hcifar PATH=/work/venv/bin:$PATH OMP_NUM_THREADS=1 XAIROBUST_DATA=/work/data
cd /work/runs/manip
mkdir -p R/standard R/pgd
for r in ${RUNS:-standard pgd}; do cp /work/runs/cpu/$r/{run.json,model.safetensors,config.yaml,history.csv} R/$r/; done
/usr/bin/time -f "%e wall %U user %S sys" python /work/wt/hcifar/scripts/manipulation_study.py $(for r in ${RUNS:-standard pgd}; do echo R/$r; done) --eps 8/255 --n 32 --steps 10 --batch-size 16 \
    --data-dir /work/data --no-transfer --only topk/saliency,random/saliency,targeted/saliency,topk/ig,targeted/ig --out OUT
echo manip-done
