# Issue 18's CIFAR-10 controls at CPU scale (2 shared cores at load 9-12, nice 10; wall 38 min for both passes).
# runs/h18d/{standard,pgd}: copies of two runs trained by the tool earlier today (their config.yaml is in runs/*/;
# weights sha256 in weights_sha256.csv). The batch only attacks, explains, scores and reports them.
mkdir -p /tmp/h22study/cifarc/runs/h18d && cp -rp <the two run dirs> /tmp/h22study/cifarc/runs/h18d/
cd /tmp/h22study/cifarc
XAIROBUST_DATA=/work/data PYTHONPATH=<worktree> OMP_NUM_THREADS=1 nice -n 10 python -m xairobust batch <worktree>/results/controls_cifar10_cpu/zoo.yaml --root . --workers 1 --quiet
# The first pass fails blur's explain job on the Standard run: blur's `match` needs the PGD run's IG attributions, and
# the batch does not know about that cross-run input. The same command again resumes and does the blur (and the report).
XAIROBUST_DATA=/work/data PYTHONPATH=<worktree> OMP_NUM_THREADS=1 nice -n 10 python -m xairobust batch <worktree>/results/controls_cifar10_cpu/zoo.yaml --root . --workers 1 --quiet
# then: this folder = <root>/results/controls_cifar10_cpu/cifar10_cifar_cnn/ (the report, samples.csv inside)
# + runs/*/{run.json,config.yaml,history.csv,robustness.json,attributions/*.json,scores/*.json}
