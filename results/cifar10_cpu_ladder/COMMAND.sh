# CIFAR-10 CPU robustness ladder (issue 19; issue 18 controls). 2 shared CPU cores, load 4-6, nice 10.
# 1) the batch (configs/zoo/cifar10_cpu_ladder.yaml as in fea999c), from a detached snapshot worktree of that commit:
cd /work/wt/h23ladder-run && XAIROBUST_DATA=/work/data PYTHONPATH=/work/wt/h23ladder-run OMP_NUM_THREADS=1 nice -n 10 python -m xairobust study cifar10_cpu_ladder --root /work/runs23/cifar_ladder --workers 2 --quiet
#    (the two Standard runs and their IG explanations were reused from the coordinator's first pass of the same
#    zoo at 2 fine-tuning epochs: same identity hashes; that pass was stopped before any rung was trained.)
#    At the session deadline 7 of the 10 runs were finished (seed 0: Standard + eps 0, 2, 4, 8/255; seed 1:
#    Standard + eps 0); seed 1's eps 2/255, 4/255 (training) and 8/255 (not started) were not. Running the same
#    command again resumes the batch and then writes the full page.
# 2) report + study page over the 7 finished runs (main's code, the same functions `study` calls):
set -e
R=/work/runs23/cifar_ladder/runs/cifar10_cpu_ladder
RUNS="$R/cifar10_cifar_cnn_Standard_s0-4dcc7532 $R/cifar10_cifar_cnn_PGD_eps=0_s0-6fc5e1bf $R/cifar10_cifar_cnn_PGD_eps=2_255_s0-0fe715bd $R/cifar10_cifar_cnn_PGD_eps=4_255_s0-3b1a06ae $R/cifar10_cifar_cnn_PGD_eps=8_255_s0-8f47485c $R/cifar10_cifar_cnn_Standard_s1-0879e1e0 $R/cifar10_cifar_cnn_PGD_eps=0_s1-c619e1b6"
OUT=/work/runs23/partial/cifar10_cpu_ladder
export XAIROBUST_DATA=/work/data PYTHONPATH=/work/wt/h23ladder-run OMP_NUM_THREADS=1
nice -n 10 python -m xairobust report $RUNS --out $OUT/cifar10_cifar_cnn --baseline "PGD eps=0" --common-correct --mixed --figures --formats png --quiet
nice -n 10 python - "$OUT" $RUNS <<'PY'
import sys
from pathlib import Path
from xairobust.report.study import Section, StudyInfo, build_study
out = Path(sys.argv[1]); runs = [Path(p) for p in sys.argv[2:]]
s = Section(name="cifar10_cifar_cnn", report_dir=out / "cifar10_cifar_cnn", runs=runs, baseline="PGD eps=0")
build_study([s], out, StudyInfo(name="cifar10_cpu_ladder", description="PGD L-inf eps ladder {0, 2, 4, 8}/255 on CIFAR-10, cifar_cnn (7 of 10 runs finished: seed 0 complete, seed 1 Standard + eps 0)", command="results/cifar10_cpu_ladder/COMMAND.sh", zoo_file="configs/zoo/cifar10_cpu_ladder.yaml"), quiet=True)
print("page", out / "index.html")
PY
# 3) this folder = $OUT (page, figures, study CSVs, report folder cifar10_cifar_cnn/ with samples.csv)
#    + runs/*/{robustness,run}.json, config.yaml, history.csv, scores/*.json; weights_sha256.csv from
#    each run's model.safetensors (equal to run.json's weights_sha256): /work/runs23/partial/assemble.sh
