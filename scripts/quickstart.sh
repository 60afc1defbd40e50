#!/usr/bin/env bash
# Set everything up and run mltool's main job end to end on real data:
# train a CNN on Fashion-MNIST, then reload the saved model and re-measure it on the 10k test set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

mltool datasets list
mkdir -p runs
mltool train fashion-mnist "$@" --json > runs/quickstart-summary.json
run_dir=$(python -c 'import json; print(json.load(open("runs/quickstart-summary.json"))["run_dir"])')
mltool evaluate "$run_dir"
echo "Artefacts in $run_dir: model.keras labels.txt mltool.json history.csv curves.png confusion_matrix.png evaluation.json" >&2
