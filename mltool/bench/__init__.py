"""Honest latency numbers, in the manner of LiteRT's benchmark_model."""
