"""Training: model zoo and the training loop. TensorFlow is imported inside functions only."""
