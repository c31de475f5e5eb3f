#!/bin/sh
# Issue 20 bench runs (1 thread, nice -n 10, process CPU time; the 2-core machine was shared by ~8 agents, load 8-12).
set -e
export PYTHONPATH=. OMP_NUM_THREADS=1
B=results/bench_score
nice -n 10 python scripts/bench_score.py --models cifar_cnn --n 2 --nr-samples 3 --repeats 1 --probe-max 128 --data-dir /work/data --out $B/issue20_cifar_cnn.json > $B/issue20_cifar_cnn.txt 2>&1
nice -n 10 python scripts/bench_score.py --models resnet18_cifar --n 2 --nr-samples 2 --n-steps 10 --repeats 1 --probe-max 32 --data-dir /work/data --out $B/issue20_resnet18_cifar.json > $B/issue20_resnet18_cifar.txt 2>&1
nice -n 10 python scripts/bench_score.py --skip-bench --deviation /work/h18d_runs/cifar/standard,/work/h18d_runs/cifar/pgd --deviation-n 16 --nr-samples 10 --n-steps 20 --data-dir /work/data --out $B/issue20_bf16_deviation.json > $B/issue20_bf16_deviation.txt 2>&1
nice -n 10 python scripts/bench_score.py --models digits_cnn --n 4 --nr-samples 5 --repeats 1 --probe-max 1024 --out $B/issue20_digits_cnn.json > $B/issue20_digits_cnn.txt 2>&1
nice -n 10 python scripts/bench_explain.py --models digits_cnn,cifar_cnn,resnet18_cifar --explainers ig,saliency,smoothgrad,gradient_shap --reps 2 --out results/bench_explain/issue20_cpu.json > results/bench_explain/issue20_cpu.txt 2>&1
nice -n 10 python scripts/bench_costs.py --out results/bench_score/issue20_costs.json > results/bench_score/issue20_costs.txt 2>&1
# run separately, before the chain above (torch.compile, minutes of C++ compilation):
# nice -n 10 python scripts/bench_explain.py --models cifar_cnn --explainers ig --compile fp32 --out results/bench_explain/cifar_cnn_compile.json > results/bench_explain/cifar_cnn_compile.txt 2>&1
