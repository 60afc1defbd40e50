"""Keras/SavedModel -> TFLite conversion with quantization, calibration and embedded metadata."""
