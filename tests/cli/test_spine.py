"""The train-to-device spine is exact: images larger than the model input go through the same
decode, resize and normalisation in training and in `mltool infer`."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def _spine():
    spec = importlib.util.spec_from_file_location("spine_report", REPO / "scripts" / "bench" / "spine_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_agrees_with_keras_on_the_training_loaders_arrays(tmp_path):
    figures = _spine().run(tmp_path, per_class=12, epochs=2)  # 480x360 JPEGs into a 64x64 model
    assert figures["float32"]["files"] == 24
    assert figures["float32"]["top1_agreement"] == 1.0
    assert figures["float32"]["max_abs_diff"] <= 1e-3
    assert figures["int8"]["top1_agreement"] >= 0.9  # quantization, not preprocessing, may move a borderline file
    run_info = (tmp_path / "run" / "mltool.json").read_text()
    assert '"resize_method": "pyramid-bilinear"' in run_info
    from mltool.runtime.interpreter import load_model

    meta = load_model(tmp_path / "run" / "model_int8.tflite").metadata
    assert meta.input.resize_method == "pyramid-bilinear" and meta.input.resize == [64, 64]
