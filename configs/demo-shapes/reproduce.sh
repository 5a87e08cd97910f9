#!/usr/bin/env bash
# Rebuild bundles/demo-shapes from nothing: benchmark (+ the shifted test set) → edge teacher →
# the device's small local detector → student → bundle → report on both test sets. Re-running resumes from out/runs/ checkpoints;
# FRESH=1 starts over. About 90 minutes on 2 CPU cores (the README says what it took).
#   bash configs/demo-shapes/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
FRESH=${FRESH:+--fresh}

started=$(date +%s)
$PY -m splitedge dataset generate --out out/data/shapes --seed 0 --train 8000 --val 200 --test 200
# The shifted test set: only style families the training set never draws (see
# device_client/scenes/styles.py), same classes, sizes and camera.
$PY -m splitedge dataset generate --out out/data/shapes-shifted --styles shifted --seed 0 \
    --train 0 --val 0 --test 200
$PY -m splitedge dataset video --out out/data/shapes/video.mp4 --seed 1 --frames 120
$PY -m splitedge train configs/demo-shapes/teacher-det.yaml $FRESH
$PY -m splitedge train configs/demo-shapes/local-det.yaml $FRESH
$PY -m splitedge train configs/demo-shapes/student.yaml $FRESH
# --write-manifest: the bundle's branch accuracies come from this report (in-distribution set)
$PY -m splitedge eval --bundle bundles/demo-shapes --data out/data/shapes/test.json \
    --data out/data/shapes-shifted/test.json --out reports/demo-shapes --write-manifest
echo "reproduce.sh: $(( $(date +%s) - started )) s"
