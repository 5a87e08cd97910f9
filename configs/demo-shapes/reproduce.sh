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
# The edge teacher and the local model do not depend on each other: they train side by side, one
# thread each. These small detectors run only 1.1-1.3x faster on two threads than on one, so the
# pair finishes ~9 minutes sooner than one after the other (README, "the demo bundle"). If either
# fails, `wait` fails the script and the trap stops the other.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
$PY -m splitedge train configs/demo-shapes/teacher-det.yaml --set threads=1 $FRESH &
teacher=$!
$PY -m splitedge train configs/demo-shapes/local-det.yaml --set threads=1 $FRESH &
local_model=$!
wait "$teacher"
wait "$local_model"
$PY -m splitedge train configs/demo-shapes/student.yaml $FRESH
# --write-manifest: the bundle's branch accuracies come from this report (in-distribution set)
$PY -m splitedge eval --bundle bundles/demo-shapes --data out/data/shapes/test.json \
    --data out/data/shapes-shifted/test.json --out reports/demo-shapes --write-manifest
echo "reproduce.sh: $(( $(date +%s) - started )) s"
