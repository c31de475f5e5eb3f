# Issue 18's CIFAR-10 Standard vs PGD for the metric families beyond the seven, with the controls.
# The two runs are copies of results/controls_cifar10_cpu's inputs (cifar_cnn, seed 0; weights sha256 in
# weights_sha256.csv; their config.yaml in runs/*/). The copies already held that folder's attack, explain and
# quick-preset scores, so the batch only re-scores IG / sobel / random / blur with the new metric families and reports.
mkdir -p /tmp/xcifar/runs/h18d && cp -rp /tmp/h22study/cifarc/runs/h18d/standard /tmp/h22study/cifarc/runs/h18d/pgd /tmp/xcifar/runs/h18d/
cd /tmp/xcifar
XAIROBUST_DATA=/work/data OMP_NUM_THREADS=1 nice -n 5 python -m xairobust batch <repo>/results/controls_cifar10_cpu_extended/zoo.yaml --root . --workers 1
# (run twice if the first pass fails blur's job: blur's `match` reads the PGD run's IG attributions, an input the
#  batch does not order; here the first pass stopped on a zoo error of mine instead, fixed before the second)
# then: cifar10_cifar_cnn/ = <root>/results/controls_cifar10_cpu_extended/cifar10_cifar_cnn/ (without logs/),
#       runs/*/ = run.json, config.yaml, history.csv, robustness.json, attributions/*.json, scores/*.json
