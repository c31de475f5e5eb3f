# results/cifar10_cpu regenerated 2026-12-04 (helper hcifar) on 2 shared CPU cores, from /work (holding runs/cpu/):
export XAIROBUST_DATA=/work/data PYTHONPATH=/work/wt/hcifar
C=/work/wt/hcifar/configs/cifar10
xairobust train --config $C/cpu_standard.yaml --data-dir /work/data --out runs/cpu/standard --quiet
for m in pgd jacobian; do xairobust train --config $C/cpu_$m.yaml --init runs/cpu/standard --data-dir /work/data --out runs/cpu/$m --quiet & done
xairobust train --config $C/cpu_nsloss.yaml --init runs/cpu/standard --lam 16.1546 --data-dir /work/data --out runs/cpu/nsloss --quiet   # tune-lambda not re-run
nice -n 10 xairobust batch /work/wt/hcifar/configs/zoo/cifar10_cpu_runs.yaml --root /work/runs/broot --workers 2 --threads 1 --quiet
# (Standard's IG score had been started by a batch over a copy of the zoo listing only runs/cpu/standard; the full batch
#  reused its use/explain jobs and the two finished metrics of its partial score.)
# this folder = /work/runs/broot/results/cifar10_cpu_runs/cifar10_cifar_cnn/* (logs/ dropped)
#   + runs/*/{run,config,robustness}.json/yaml, history.csv, scores/*.json, attributions/*.json; weights_sha256.csv
