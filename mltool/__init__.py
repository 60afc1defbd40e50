"""mltool: train, convert, deploy and run TFLite models on the edge."""

__version__ = "0.1.0"
