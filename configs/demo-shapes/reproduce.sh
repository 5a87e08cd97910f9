#!/usr/bin/env bash
# Rebuild bundles/demo-shapes from nothing: benchmark → teachers → student → bundle → report.
# ≈25 min on 2 CPU cores. Re-running resumes from out/runs/ checkpoints; FRESH=1 starts over.
#   bash configs/demo-shapes/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
FRESH=${FRESH:+--fresh}

$PY -m splitedge dataset generate --out out/data/shapes --seed 0 --train 1600 --val 200 --test 200
$PY -m splitedge dataset video --out out/data/shapes/video.mp4 --seed 1 --frames 120
$PY -m splitedge train configs/demo-shapes/teacher-det.yaml $FRESH
$PY -m splitedge train configs/demo-shapes/student.yaml $FRESH
$PY -m splitedge eval --bundle bundles/demo-shapes --data out/data/shapes/test.json \
    --out reports/demo-shapes
