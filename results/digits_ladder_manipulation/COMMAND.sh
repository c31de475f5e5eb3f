# The command (2 shared CPU cores at load ~3.5 with other jobs, this job at nice 10, 1 worker x 1 thread;
# wall 2 min 21 s, 87 s of CPU for the whole study: 57 jobs + the page). Code: main 6e60514 + configs/zoo/digits_ladder_manipulation.yaml.
cd ROOT && OMP_NUM_THREADS=1 nice -n 10 xairobust study digits_ladder_manipulation --root ROOT --workers 1 --quiet
# Run twice into two empty roots (/work/runs/dml, /work/runs/dml2): all 8 model.safetensors and every CSV/MD of the
# report and the page are byte-identical, except run_means*.csv, whose `run` column holds the root's absolute path.
# then this folder = ROOT/results/digits_ladder_manipulation/ (page, figures, study CSVs, the report folder
# digits_digits_cnn/ without logs/, its samples.csv and manipulation_samples.csv gzipped) + ROOT/runs/*/{run.json,
# config.yaml, history.csv, robustness.json, scores/*.json, manipulation/*.json}; weights_sha256.csv from each run's
# model.safetensors (checked equal to run.json's weights_sha256).
