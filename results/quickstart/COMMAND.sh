# The command (2026-12-04, main a291bf0 from a clean worktree; AMD EPYC, 2 shared cores at load 2.6-3.6, jobs at nice 10;
# wall 3 min 58 s for the whole demo from nothing, 145 s user CPU).
nice -n 10 xairobust demo --workers 1 --out /tmp/hq/demo2     # = xairobust batch configs/zoo/quickstart.yaml
# then: results/quickstart/ = /tmp/hq/demo2/results/quickstart/digits_digits_cnn/ without logs/ and .batch/,
# samples.csv gzipped (gzip -9 -n); weights_sha256.csv from each run's model.safetensors (checked equal to run.json's).
