# CIFAR-10 CPU robustness ladder (issue 19; issue 18 controls). 2 shared CPU cores.
# The batch (configs/zoo/cifar10_cpu_ladder.yaml), run from a detached snapshot worktree of the code:
#   pass 1 (previous session, snapshot of fea999c, load 4-6, nice 10): 7 of the 10 runs and their jobs;
#   pass 2 (this folder, snapshot of e7ee7fb, idle machine): the same command resumed the batch. Every done job of
#   pass 1 was judged current by provenance (same identities, same input sha256) and reused; it trained the three
#   missing seed-1 rungs (eps 2, 4, 8/255), attacked, explained, scored them and wrote the report and the page.
cd /work/wt/ladderrun && XAIROBUST_DATA=/work/data PYTHONPATH=/work/wt/ladderrun OMP_NUM_THREADS=1 nice -n 10 python -m xairobust study cifar10_cpu_ladder --root /work/runs23/cifar_ladder --workers 2 --quiet
# (the two Standard runs and their IG explanations of pass 1 were reused from an earlier first pass of the same zoo at
#  2 fine-tuning epochs: same identity hashes.)
# This folder = <root>/results/cifar10_cpu_ladder/ (page, figures, study CSVs, the report cifar10_cifar_cnn/ with
# samples.csv; its .batch/ and logs/ dropped) + runs/*/{robustness,run}.json, config.yaml, history.csv, scores/*.json;
# weights_sha256.csv from each run's model.safetensors (equal to run.json's weights_sha256). Copy script:
#   /work/runs24/assemble.sh <worktree>
# Re-check every table value and star from samples.csv: python scripts/check_results.py results/cifar10_cpu_ladder
