#!/usr/bin/env bash
# The explanation-manipulation study (docs/manipulation.md): top-k, targeted, random (and, for
# saliency, mass-centre) attacks on IG and Saliency against a standard and a PGD run, then the
# manipulation report with paired tests against the standard run.
#   scripts/manipulation_study.sh STANDARD_RUN PGD_RUN EPS N OUT [extra manipulate options]
set -euo pipefail
std=$1; pgd=$2; eps=$3; n=$4; out=$5; shift 5
for run in "$std" "$pgd"; do
  for attack in topk targeted random; do
    xairobust manipulate --run "$run" --attack "$attack" --explainer saliency --eps "$eps" --n "$n" \
      --transfer-to ig,input_x_gradient -q "$@"
    xairobust manipulate --run "$run" --attack "$attack" --explainer ig --eps "$eps" --n "$n" \
      --transfer-to saliency -q "$@"
  done
  xairobust manipulate --run "$run" --attack masscenter --explainer saliency --eps "$eps" --n "$n" -q "$@"
done
