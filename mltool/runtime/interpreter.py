"""Load a .tflite model with the best runtime available: LiteRT, then tflite-runtime, then TF.

The file is always verified by :mod:`mltool.runtime.tflite_schema` first and handed to the
interpreter as bytes (``model_content``), never by path: loading by path skips the
flatbuffer verifier, and a damaged file would then crash the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltool._silence import silenced
from mltool.errors import ModelError
from mltool.runtime.metadata import ModelMetadata, read_metadata
from mltool.runtime.model_io import TensorSpec
from mltool.runtime.quant import dequantize, quantize
from mltool.runtime.tflite_schema import ModelInfo, read_model_file

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
INSTALL_HINT = "pip install ai-edge-litert (64-bit), or tflite-runtime with numpy<2 on 32-bit Raspberry Pi OS"


def find_runtime() -> tuple[str, str, Any]:
    """(module name, version, Interpreter class) of the first runtime that imports."""
    errors = []
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return "ai_edge_litert", getattr(ai_edge_litert, "__version__", "?"), litert.Interpreter
    except ImportError as exc:
        errors.append(str(exc))
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return "tflite_runtime", getattr(tflite_runtime, "__version__", "?"), Interpreter
    except ImportError as exc:
        errors.append(str(exc))
    try:
        from mltool._tf import import_tensorflow

        tf = import_tensorflow()
        return "tensorflow", tf.__version__, tf.lite.Interpreter
    except ImportError as exc:
        errors.append(str(exc))
    raise ModelError("no TFLite runtime is installed", INSTALL_HINT)


@dataclass
class LoadedModel:
    path: Path
    info: ModelInfo
    metadata: ModelMetadata | None
    interpreter: Any
    runtime: str
    runtime_version: str
    threads: int | None
    load_seconds: float

    # Tensor specs are read from the interpreter once and again only after a resize: they are
    # consulted on every invoke, and get_*_details() rebuilds its dicts each call.
    _specs: tuple[list[TensorSpec], list[TensorSpec]] | None = field(default=None, init=False, repr=False)

    def _tensor_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self._specs is None:
            self._specs = ([TensorSpec.from_details(d) for d in self.interpreter.get_input_details()],
                           [TensorSpec.from_details(d) for d in self.interpreter.get_output_details()])
        return self._specs

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._tensor_specs()[0]

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._tensor_specs()[1]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One invoke on real-valued input ``x`` (batch dim included); dequantized outputs."""
        return self.run_prepared(quantize(x, self.inputs[0]))

    def run_prepared(self, x: np.ndarray) -> list[np.ndarray]:
        """One invoke on input already in the tensor's own dtype (quantized, or from a pixel LUT)."""
        spec = self.inputs[0]
        if tuple(x.shape) != spec.shape:
            self.interpreter.resize_tensor_input(spec.index, list(x.shape))
            self.interpreter.allocate_tensors()
            self._specs = None
            spec = self.inputs[0]
        self.interpreter.set_tensor(spec.index, x)
        self.interpreter.invoke()
        return [dequantize(self.interpreter.get_tensor(o.index), o) for o in self.outputs]

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """First output for many samples, in batches (falls back to one sample at a time)."""
        outs = []
        try:
            for i in range(0, len(x), batch):
                outs.append(self.run(x[i : i + batch])[0].copy())
        except (ValueError, RuntimeError):
            outs = [self.run(x[i : i + 1])[0].copy() for i in range(len(x))]
        return np.concatenate(outs) if outs else np.zeros((0,))


def load_model(path: str | Path, threads: int | None = None) -> LoadedModel:
    """Verify, then load and allocate a .tflite model. ``threads`` goes to the constructor
    (XNNPACK takes its thread count when the interpreter is built)."""
    path = Path(path)
    data, info = read_model_file(path)
    name, version, interpreter_cls = find_runtime()
    t0 = time.perf_counter()
    try:
        with silenced():  # LiteRT announces its XNNPACK delegate on fd 2
            interp = interpreter_cls(model_content=data, num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name} could not load {path} ({msg})",
                         "the model may use operators this runtime lacks; upgrade the runtime or re-convert") from None
    return LoadedModel(path, info, read_metadata(info), interp, name, version, threads, time.perf_counter() - t0)
