"""Dataset loaders. NumPy and Pillow only: nothing here imports TensorFlow."""
