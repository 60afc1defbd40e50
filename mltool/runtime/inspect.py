"""`inspect` as a library call: a JSON-ready description of any .tflite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def inspect_model(path: str | Path) -> dict[str, Any]:
    from mltool.runtime.interpreter import load_model

    m = load_model(path)
    details = {d["index"]: d for d in m.interpreter.get_input_details() + m.interpreter.get_output_details()}

    def tensor(t: Any) -> dict[str, Any]:
        d = t.as_dict()
        sig = details.get(t.index, {}).get("shape_signature")
        if sig is not None:
            d["shape_signature"] = [int(v) for v in sig]
        return d

    return {
        "path": str(path),
        "size_bytes": m.info.size,
        "schema_version": m.info.version,
        "description": m.info.description,
        "runtime": f"{m.runtime} {m.runtime_version}",
        "load_ms": round(m.load_seconds * 1000, 2),
        "inputs": [tensor(t) for t in m.info.inputs],
        "outputs": [tensor(t) for t in m.info.outputs],
        "signatures": m.info.signatures,
        "subgraphs": m.info.subgraphs,
        "tensors": m.info.tensors,
        "operators": dict(m.info.operators.most_common()),
        "metadata_entries": sorted(m.info.metadata),
        "mltool_metadata": m.metadata.to_dict() if m.metadata is not None else None,
    }
