#!/usr/bin/env bash
# Boychev's feature-visualisation study on a set of trained runs: inversion, class generation and
# feature visualisation per run, FID / feature distance with the given extractors, one report.
#
#   OUT=results/visual_x EXTRACTORS="run:runs/a run:runs/b" \
#   INV="--n 20 --steps 300" GEN="--n 10" FEAT="--n 4" \
#   scripts/visual_study.sh runs/standard runs/pgd
#
# PRESET (default quick), SEED (default 0) and DATA_DIR apply to every visualisation.
set -euo pipefail
OUT=${OUT:?set OUT=results/<name>}
PRESET=${PRESET:-quick}
SEED=${SEED:-0}
DATA=${DATA_DIR:+--data-dir $DATA_DIR}
for run in "$@"; do
  xairobust visualize --run "$run" --kind inversion --preset "$PRESET" --seed "$SEED" $DATA ${INV:-} -q
  xairobust visualize --run "$run" --kind generation --preset "$PRESET" --seed "$SEED" $DATA ${GEN:-} -q
  xairobust visualize --run "$run" --kind feature --preset "$PRESET" --seed "$SEED" $DATA ${FEAT:-} -q
  for ext in ${EXTRACTORS:-inception}; do
    xairobust fid --run "$run" --extractor "$ext" $DATA ${FID:-} -q
  done
done
xairobust report "$@" --out "$OUT" --formats png,pdf -q ${REPORT:-}
