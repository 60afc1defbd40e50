"""Device-side runtime: loads and runs .tflite models. Never imports TensorFlow."""
