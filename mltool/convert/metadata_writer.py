"""Embed mltool's JSON description into a .tflite flatbuffer's metadata list.

Uses the schema's object API shipped with TensorFlow (conversion already needs TensorFlow);
reading it back lives in :mod:`mltool.runtime.metadata` and needs no TensorFlow.
"""

from __future__ import annotations

from mltool.runtime.metadata import METADATA_NAME, ModelMetadata


def embed_metadata(tflite: bytes, meta: ModelMetadata) -> bytes:
    """Return ``tflite`` with ``meta`` stored as the metadata entry ``mltool`` (replacing any)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    payload = meta.to_json()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    buffer = schema.BufferT()
    import numpy as np

    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
