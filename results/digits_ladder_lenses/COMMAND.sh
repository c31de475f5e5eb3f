# The commands (2 shared CPU cores at load ~3.5 with other jobs, this job at nice 10, 1 worker x 1 thread;
# study wall 2 min 56 s, 104 s of CPU: 65 jobs + the page). Code: main e4181de + configs/zoo/digits_ladder_lenses.yaml.
cd ROOT && xairobust train --epochs 10 --seed 7 --label extractor --out extractor     # the independent feature extractor (5 s)
cd ROOT && OMP_NUM_THREADS=1 nice -n 10 xairobust study digits_ladder_lenses --root . --workers 1 --quiet
# Reproducibility: the same ladder without the visualize block was made twice before (zoo digits_ladder_manipulation,
# roots /work/runs/dml and /work/runs/dml2): the 8 model.safetensors here are byte-identical to both, and every
# per-sample value of samples.csv / manipulation_samples.csv / robustness.csv equals theirs (only the `run` path,
# which holds the zoo's name, differs); their tables were byte-identical to each other.
# then this folder = ROOT/results/digits_ladder_lenses/ (page, figures, study CSVs, the report folder
# digits_digits_cnn/ without logs/, samples.csv and manipulation_samples.csv gzipped) + ROOT/runs/*/{run.json,
# config.yaml, history.csv, robustness.json, scores/*.json, manipulation/*.json, visualisations/*.{json,csv}} and
# extractor/{run.json,config.yaml,history.csv} (weights sha256 b87a3304...c6a7d, also in every metrics_run-extractor.json);
# weights_sha256.csv from each run's model.safetensors (checked equal to run.json's weights_sha256).
