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
        "inputs": inputs, "outputs": outputs, "dynamic_inputs": [t.name for t in info.inputs if t.dynamic],
        "signatures": [{k: v for k, v in s.items() if k in ("key", "subgraph", "inputs", "outputs")} for s in info.signatures],
        "subgraphs": info.subgraphs, "tensors": info.tensors, "operators": dict(info.operators.most_common()),
        "custom_operators": sorted(set(info.custom_ops)), "metadata_entries": sorted(info.metadata),
        "mltool_metadata": meta.to_dict() if meta is not None else None,
        "tflite_metadata": standard.as_dict() if standard is not None else None,
        "problems": problems,
    }
    try:
        m = load_model(path, input_shapes=input_shape, delegate=delegate, delegate_options=delegate_options)
    except ModelError as exc:
        hint = custom_op_hint(info)
        if hint is None and not report["dynamic_inputs"]:
            raise  # the runtime refuses a model with no reason it should: damaged
        rt = find_runtime()
        report.update(runtime=f"{rt.name} {rt.version}", runnable=False, load_ms=None, runtime_error=exc.one_line())
        return report
    # after allocation: the runtime's shapes (post-processing outputs, resized dynamic inputs)
    for entries, specs in ((inputs, m.inputs), (outputs, m.outputs)):
        by_index = {s.index: s for s in specs}
        for e in entries:
            if e["index"] in by_index:
                e["shape"] = list(by_index[e["index"]].shape)
    report.update(runtime=f"{m.runtime} {m.runtime_version}", runnable=True, load_ms=round(m.load_seconds * 1000, 2),
                  runtime_error=None, delegate=m.delegate)
    return report
