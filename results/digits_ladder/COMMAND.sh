# The command (2 shared CPU cores at load 9-12, jobs at nice 10; wall 37 min 45 s for the batch + page).
# configs/zoo/digits_ladder.yaml as committed in 70b8053 (branch h22study: IG + sobel).
# 30 of the 33 trained runs were already in the root (h19study's batch of the same zoo, same
# identity hashes); retraining two of them from their config.yaml with today's code gave
# bit-identical weights (see README). All other stages ran here.
cd /tmp/h22study && PYTHONPATH=<worktree> OMP_NUM_THREADS=1 nice -n 10 python -m xairobust study digits_ladder --root /tmp/h22study/digits --workers 2 --quiet
# then: results/digits_ladder/ = <root>/results/digits_ladder/ (page, figures, study CSVs, the report
# folder digits_digits_cnn/ with samples.csv) + runs/*/robustness.json and runs/*/scores/*.json
# (per-run diagnostics, e.g. MPRT per layer); weights_sha256.csv from each run's model.safetensors
# (checked equal to run.json's weights_sha256). The per-sample values are in digits_digits_cnn/samples.csv.
