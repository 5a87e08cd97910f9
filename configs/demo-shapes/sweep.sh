#!/usr/bin/env bash
# The λ sweep and the HND / GHND comparisons around the demo student (same teachers, same data),
# then one report with every bundle. Run configs/demo-shapes/reproduce.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
LAMBDAS=${LAMBDAS:-"3.0 30.0"}
bundles=(--bundle bundles/demo-shapes)
for lambda in $LAMBDAS; do
  $PY -m splitedge train configs/demo-shapes/student.yaml --set student.rate_lambda="$lambda" \
      --set out=out/runs/demo-shapes/student-l"$lambda" \
      --set export.out=out/bundles/demo-shapes-l"$lambda" --set student.prefilter=null
  bundles+=(--bundle out/bundles/demo-shapes-l"$lambda")
done
for method in ${METHODS:-}; do
  # HND / GHND as published: the teacher's tail stays frozen (no stage 2)
  $PY -m splitedge train configs/demo-shapes/student.yaml --set student.method="$method" \
      --set out=out/runs/demo-shapes/student-"$method" --set student.stage2=null \
      --set export.out=out/bundles/demo-shapes-"$method" --set student.prefilter=null
  bundles+=(--bundle out/bundles/demo-shapes-"$method")
done
$PY -m splitedge eval "${bundles[@]}" --data out/data/shapes/test.json \
    --data out/data/shapes-shifted/test.json --out reports/demo-shapes-sweep
