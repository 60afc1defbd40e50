"""`inspect` as a library call: a JSON-ready description of any .tflite file.

The description comes from the flatbuffer itself (tensors with their shape signatures,
operators, signatures, metadata), so a valid model is always described, even one this runtime
cannot allocate or run (dynamic shapes, custom operators). The runtime then adds what only it
knows: the shapes after allocation (post-processing outputs read ``[]`` before), and whether it
can run the model here at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mltool.errors import ModelError


def inspect_model(path: str | Path, *, input_shape: list[list[int]] | None = None, delegate: str | None = None,
                  delegate_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Describe the model at ``path``. A file that is not a valid model raises ModelError; a
    valid model the runtime cannot load is described with ``runnable: false`` and the reason."""
    from mltool.runtime.interpreter import check_sizes, custom_op_hint, find_runtime, load_model
    from mltool.runtime.metadata import read_metadata
    from mltool.runtime.tflite_metadata import read_standard_metadata
    from mltool.runtime.tflite_schema import read_model_file

    path = Path(path)
    data, info = read_model_file(path)
    check_sizes(info, path)
    problems: list[str] = []
    meta = read_metadata(info, problems)
    standard = read_standard_metadata(info, data)
    if standard is not None:
        problems += standard.problems
    inputs = [t.as_dict() for t in info.inputs]
    outputs = [t.as_dict() for t in info.outputs]
    report: dict[str, Any] = {
        "path": str(path), "size_bytes": info.size, "schema_version": info.version, "description": info.description,
        "inputs": inputs, "outputs": outputs, "dynamic_inputs": [t.name for t in info.inputs if t.needs_shape],
        "dynamic_batch": any(t.shape_signature[:1] == [-1] for t in info.inputs),
        "signatures": [{k: v for k, v in s.items() if k in ("key", "subgraph", "inputs", "outputs")} for s in info.signatures],
        "subgraphs": info.subgraphs, "tensors": info.tensors, "operators": dict(info.operators.most_common()),
        "custom_operators": sorted(set(info.custom_ops)), "metadata_entries": sorted(info.metadata),
        "mltool_metadata": meta.to_dict() if meta is not None else None,
        "tflite_metadata": standard.as_dict() if standard is not None else None,
        "problems": problems,
        "quantization_scheme": quantization_scheme(info),
    }
    try:
        m = load_model(path, input_shapes=input_shape, delegate=delegate, delegate_options=delegate_options)
    except ModelError as exc:
        hint = custom_op_hint(info)
        if hint is None and not report["dynamic_inputs"]:
            raise  # the runtime refuses a model with no reason it should: damaged
        rt = find_runtime()
        report.update(runtime=f"{rt.name} {rt.version}", runnable=False, load_ms=None, runtime_error=exc.one_line())
        report["family"] = _family(info.inputs, info.outputs, info=info)
        report["ultralytics_metadata"] = None
        return report
    # after allocation: the runtime's shapes (post-processing outputs, resized dynamic inputs)
    for entries, specs in ((inputs, m.inputs), (outputs, m.outputs)):
        by_index = {s.index: s for s in specs}
        for e in entries:
            if e["index"] in by_index:
                e["shape"] = list(by_index[e["index"]].shape)
    report.update(runtime=f"{m.runtime} {m.runtime_version}", runnable=True, load_ms=round(m.load_seconds * 1000, 2),
                  runtime_error=None, delegate=m.delegate)
    report["family"] = _family(m.inputs, m.outputs, m)
    report["ultralytics_metadata"] = m.ultralytics[0] if m.ultralytics else None
    return report


def _family(inputs: list[Any], outputs: list[Any], m: Any = None, info: Any = None) -> dict[str, Any]:
    """What infer would make of the model (classifier, SSD, YOLO..., raw) and why."""
    from mltool.runtime.family import decide

    names: list[list[str]] = []
    sigs = (m.info if m is not None else info).signatures
    if sigs and sigs[0].get("output_tensors"):
        by_tensor = dict(zip(sigs[0]["output_tensors"], sigs[0]["outputs"]))
        names.append([by_tensor.get(o.index) or "" for o in outputs])
    if m is not None and m.standard is not None and m.standard.output_names:
        names.append(m.standard.output_names)
    meta = m.description if m is not None else None
    return decide(inputs, outputs, names, meta, m.ultralytics[0] if m is not None and m.ultralytics else None).as_dict()


_INT = ("int8", "uint8", "int16", "int4")


def quantization_scheme(info: Any) -> dict[str, Any]:
    """How a model is quantized, read from its graph (a
    :class:`~mltool.runtime.tflite_schema.ModelInfo`): float32, float16 weights, dynamic range
    (int8 weights, float activations), full integer with float I/O, or full integer with integer
    I/O; with the tensor counts that show it."""
    const, act = info.constant_types, info.activation_types
    w_int, w_f16, w_f32 = sum(const[t] for t in _INT), const["float16"], const["float32"]
    a_int, a_float = sum(act[t] for t in _INT), act["float32"] + act["float16"]
    io = sorted({t.dtype for t in [*info.inputs, *info.outputs]})
    io_int = bool(io) and all(t in _INT for t in io)
    if a_int > a_float:
        bits = "16x8 " if act["int16"] > act["int8"] + act["uint8"] else ""
        scheme = f"full integer {bits}with {'integer' if io_int else 'float'} I/O"
    elif w_int:
        scheme = "dynamic range (int8 weights, float activations)"
    elif w_f16:
        scheme = "float16 weights"
    else:
        scheme = "float32"
    counts = (f"weights: {w_int} integer, {w_f16} float16, {w_f32} float32 tensors; activations: {a_int} integer, "
              f"{a_float} float tensors; I/O {', '.join(io) or '-'}")
    why = {"float32": "nothing is quantized", "float16 weights": "float16 weights are dequantized to float32 at load; "
           "it runs as fast as float32 on CPU", "dynamic range (int8 weights, float activations)":
           "int8 weights, float activations: faster than float only where the runtime has hybrid kernels"}.get(
        scheme, "integer kernels run end to end" + ("" if io_int else "; inputs and outputs are (de)quantized at the edges"))
    return {"scheme": scheme, "evidence": counts, "note": why}
