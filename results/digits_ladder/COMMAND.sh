# The command (2026-12-04; 2 shared CPU cores at load 7.6-16, jobs at nice 10; wall 16 min 53 s for the batch + page,
# 395 s user CPU). configs/zoo/digits_ladder.yaml as committed in 48d5ad8 (branch hquick: IG + sobel + blur with
# match "PGD eps=0.1", the label resolved per seed). All 33 runs trained here from nothing (a fresh root).
cd /work/wt/hquick && PYTHONPATH=/work/wt/hquick OMP_NUM_THREADS=1 nice -n 10 python -m xairobust study digits_ladder --root /tmp/hq/ladder --workers 2 --quiet
# then: results/digits_ladder/ = <root>/results/digits_ladder/ (page, figures, study CSVs, the report folder
# digits_digits_cnn/ with samples.csv, without logs/ and .batch/) + runs/*/robustness.json and runs/*/scores/*.json
# (per-run diagnostics, e.g. MPRT per layer); weights_sha256.csv from each run's model.safetensors (checked equal to
# run.json's weights_sha256). The per-sample values are in digits_digits_cnn/samples.csv.
