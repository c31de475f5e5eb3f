#!/usr/bin/env bash
# The first GPU figures (issue 14), in under 8 minutes on one GPU:
#   1. install what the machine lacks (offline: wheels from --wheels DIR, made here with
#      `scripts/gpu_check.sh --fetch-wheels DIR` where PyPI is reachable);
#   2. train resnet18_cifar (standard) for 1 epoch on CIFAR-10: resident data (the train stage
#      keeps the split on the GPU), bf16 autocast, channels_last; the epoch time is read from
#      history.csv;
#   3. the score benchmark on that run at n = 256: native engine vs Quantus as documented vs the
#      best-batch limit (scripts/bench_score.py; Quantus is timed on --quantus-n samples of the
#      sensitivity metrics and scaled, so the script stays inside its time budget); since issue 20
#      the same run also measures the limits matrix (layouts x precisions x batch sizes, FLOPs per
#      point, matmul peak per dtype) and times the native engine in fp32 and bf16.
# Writes $OUT/gpu_check.json, $OUT/bench_score.json, $OUT/bench_score.txt, $OUT/train.log.
#
#   scripts/gpu_check.sh [--cpu] [--data-dir DIR] [--cifar-src DIR] [--wheels DIR] [--out DIR] [--n N]
#
# --cpu        the same steps, tiny, on the CPU (digits + digits_cnn, n = 2, IG 4 steps): tests the script.
# --data-dir   folder holding cifar-10-batches-py/ (default: $XAIROBUST_DATA or ./data)
# --cifar-src  folder with build_batches.py + cifar10-jpeg.zip (../shared/data/cifar10): builds
#              cifar-10-batches-py into --data-dir when it is absent (~6 s)
set -euo pipefail
cd "$(dirname "$0")/.."
CPU=0; DATA="${XAIROBUST_DATA:-$PWD/data}"; SRC=""; WHEELS=""; OUT="${OUT:-$PWD/gpu_check_out}"; N=256; QN=32; FETCH=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --data-dir) DATA="$2"; shift ;;
    --cifar-src) SRC="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --n) N="$2"; shift ;;
    --quantus-n) QN="$2"; shift ;;
    --fetch-wheels) FETCH="$2"; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
T0=$(date +%s)

if [ -n "$FETCH" ]; then  # run where PyPI is reachable; carry the folder to the GPU machine
  mkdir -p "$FETCH"
  "$PY" -m pip download --no-deps -d "$FETCH" captum quantus safetensors rich click pyyaml
  exit 0
fi

# 1. what the machine lacks
MISSING=$("$PY" - <<'EOF'
import importlib
need = {"torch": "torch", "torchvision": "torchvision", "captum": "captum", "quantus": "quantus",
        "safetensors": "safetensors", "rich": "rich", "click": "click", "yaml": "pyyaml",
        "pandas": "pandas", "scipy": "scipy"}
print(" ".join(p for m, p in need.items() if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$MISSING" ]; then
  echo "installing: $MISSING"
  if [ -n "$WHEELS" ]; then
    "$PY" -m pip install --no-deps --no-index --find-links "$WHEELS" $MISSING
  else
    "$PY" -m pip install $MISSING
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
T1=$(date +%s)

# 2. one epoch of resnet18_cifar
if [ "$CPU" = 1 ]; then
  DEVICE=cpu; MODEL=digits_cnn; N=2; QN=1; STEPS=4; REPEATS=1; THREADS=1
  cat > "$OUT/train.yaml" <<EOF
dataset: digits
model: digits_cnn
method: standard
epochs: 1
batch_size: 64
device: cpu
out: $OUT/run
EOF
else
  DEVICE=cuda; MODEL=resnet18_cifar; STEPS=50; REPEATS=1; THREADS=$(nproc)
  if [ ! -d "$DATA/cifar-10-batches-py" ]; then
    [ -n "$SRC" ] || { echo "gpu_check.sh: no $DATA/cifar-10-batches-py; give --data-dir or --cifar-src" >&2; exit 2; }
    mkdir -p "$DATA"; "$PY" "$SRC/build_batches.py" "$DATA"
  fi
  cat > "$OUT/train.yaml" <<EOF
dataset: cifar10
model: resnet18_cifar
method: standard
epochs: 1
batch_size: 512
optimizer: sgd
lr: 0.2
schedule: cosine
precision: bf16
channels_last: true
device: cuda
data_dir: $DATA
out: $OUT/run
EOF
fi
"$PY" -m xairobust train --config "$OUT/train.yaml" --force --quiet > "$OUT/train.log" 2>&1 || { cat "$OUT/train.log"; exit 1; }
T2=$(date +%s)

# 3. the score benchmark on the trained run
SKIP=""
"$PY" scripts/bench_score.py --models "$MODEL" --run "$OUT/run" --run-model "$MODEL" --device "$DEVICE" \
  --n "$N" --quantus-n "$QN" --n-steps "$STEPS" --repeats "$REPEATS" --threads "$THREADS" \
  ${DATA:+--data-dir "$DATA"} --out "$OUT/bench_score.json" > "$OUT/bench_score.txt" 2>&1 || { cat "$OUT/bench_score.txt"; exit 1; }
T3=$(date +%s)
cat "$OUT/bench_score.txt"

"$PY" - "$OUT" "$T0" "$T1" "$T2" "$T3" "$DEVICE" <<'EOF'
import csv, json, sys
out, t0, t1, t2, t3, device = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
rows = list(csv.DictReader(open(f"{out}/run/history.csv")))
run = json.load(open(f"{out}/run/run.json"))
doc = {
    "device": device,
    "epoch_time_s": float(rows[0]["time_s"]) if rows and "time_s" in rows[0] else None,
    "clean_accuracy_after_1_epoch": run.get("clean_accuracy"),
    "train_wall_s": run.get("wall_time_s"),
    "stage_s": {"install": t1 - t0, "train": t2 - t1, "bench": t3 - t2, "total": t3 - t0},
    "bench": json.load(open(f"{out}/bench_score.json")),
}
json.dump(doc, open(f"{out}/gpu_check.json", "w"), indent=1, default=str)
print(f"epoch {doc['epoch_time_s']} s, accuracy {doc['clean_accuracy_after_1_epoch']}, stages {doc['stage_s']}")
EOF
