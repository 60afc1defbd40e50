#!/usr/bin/env bash
# Set everything up and run mltool's main job end to end on real data:
# train a CNN on Fashion-MNIST, re-measure it on the 10k test set, convert it to TFLite in every
# quantization mode (accuracy and size side by side), run the int8 model on real test images
# with the device runtime, and benchmark float32 against int8.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p runs

mltool datasets list
mltool train fashion-mnist "$@" --json > runs/quickstart-summary.json
run_dir=$(python -c 'import json; print(json.load(open("runs/quickstart-summary.json"))["run_dir"])')
mltool evaluate "$run_dir"
mltool convert "$run_dir" --quantize all --max-drop 1.0

# A handful of real test-set images (never seen in training) as PNG files, named by true label.
images="$run_dir/sample-images"
mltool datasets samples fashion-mnist "$images" --count 8
mltool infer "$run_dir/model_int8.tflite" "$images" --top-k 2
mltool bench "$run_dir/model_float32.tflite" "$run_dir/model_int8.tflite" --threads 1,2
echo "Artefacts in $run_dir: model.keras, model_*.tflite (with embedded metadata), labels.txt, mltool.json," \
     "history.csv, curves.png, confusion_matrix.png, mistakes.png, evaluation.json, convert.json" >&2
