"""The protocols, as adapters over the one inference path (:meth:`App.infer`):

* Open Inference Protocol v2 (KServe, Triton, Seldon): ``POST /v2/models/{name}/infer`` with
  FP32/UINT8/INT8 tensors (JSON ``data``, or the binary tensor data extension) or encoded
  images as BYTES;
* the tutorial's Flash shape: ``POST /predict`` ``{"session", "payload": {"inputs": {"data": b64}}}``;
* TF Serving REST: ``POST /v1/models/{name}:predict`` ``{"instances": [...]}`` (numbers, or
  ``{"b64": ...}`` images) -> ``{"predictions": [...]}``;
* uploads: ``POST /api/image`` (multipart field ``file``, or a raw image/* body) -> labels,
  scores, boxes in the original image's pixels, release and timings.

Encoded images take the Predictor's own path (decode, resize, normalise, quantize, decode the
outputs), so every protocol answers exactly what `mltool infer` prints for the same image. A
model served with task ``raw`` answers every protocol with its output tensors, named as its
signature names them.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from mltool.runtime.predictor import Predictor, Result
from mltool.serve import inputs
from mltool.serve.engine import Job, Release
from mltool.serve.http import HttpError, Request, Response, shown

if TYPE_CHECKING:
    from mltool.serve.app import App

_OIP = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.int8): "INT8", np.dtype(np.int32): "INT32",
        np.dtype(np.int64): "INT64", np.dtype(np.float16): "FP16", np.dtype(np.int16): "INT16"}


def oip_datatype(spec: Any) -> str:
    return _OIP.get(np.dtype(spec.dtype), str(np.dtype(spec.dtype)).upper())


def register(app: App) -> None:
    p = Protocols(app)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add("POST", prefix + "/infer", p.oip_infer)
    app.add("POST", "/predict", p.flash)
    app.add("POST", "/v1/models/{name}:predict", p.tfs_predict)
    app.add("POST", "/v1/models/{name}/versions/{version}:predict", p.tfs_predict)
    app.add("GET", "/v1/models/{name}", p.tfs_status)
    app.add("POST", "/api/image", p.upload)


def image_job(app: App, images: list[bytes], names: list[str], sizes: list[tuple[int, int]] | None = None) -> Job:
    return Job(decode=lambda p: inputs.image_frames(images, names, p._draft(), sizes, fit=inputs.fitter(p)))


def run_tensor(p: Predictor, rel: Release, x: np.ndarray, datatype: str, where: str) -> tuple[list[np.ndarray], list[Any]]:
    """Raw tensor input on a worker: checked against the model's input, run (as one batch when
    the model allows it), and decoded row by row like any frame."""
    spec = p.model.inputs[0]
    want = list(spec.shape[1:])
    if list(x.shape) == want:
        x = x[None]
    if list(x.shape[1:]) != want or x.shape[0] < 1:
        raise HttpError(400, f"{where}.shape {list(x.shape)} does not fit the model's input {[-1, *want]}")
    if datatype == "FP32":
        run = p.model.run  # real values: quantized with the tensor's scale and zero point
    elif np.dtype(x.dtype) == spec.dtype:
        run = p.model.run_prepared
    else:
        raise HttpError(400, f"{where}.datatype {datatype} does not match the model's {oip_datatype(spec)} input; "
                             f"send FP32 values, or {oip_datatype(spec)} values already quantized")
    n = x.shape[0]
    if n == 1 or rel.batchable:
        outs = run(x)
    else:
        rows = [run(x[i : i + 1]) for i in range(n)]
        outs = [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]
    decoded = [p.decode([o[i : i + 1] for o in outs]) for i in range(n)]
    return outs, decoded


class Protocols:
    def __init__(self, app: App) -> None:
        self.app = app

    # ------------------------------------------------------------------ Open Inference Protocol v2
    async def oip_infer(self, req: Request, name: str, version: str | None = None) -> Response:
        app = self.app
        app.check_model(name, version)
        body, binary = _oip_body(req)
        ins = body.get("inputs")
        if not isinstance(ins, list) or len(ins) != 1 or not isinstance(ins[0], dict):
            raise HttpError(400, "inputs must be a list with one tensor object (this model has one input)")
        inp = ins[0]
        where = f"inputs[0] ({shown(str(inp.get('name', '?')), 40)})"
        datatype = inp.get("datatype")
        params = inp.get("parameters") or {}
        raw = None
        if isinstance(params, dict) and "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size < 0 or size > len(binary):
                raise HttpError(400, f"{where}.parameters.binary_data_size {size!r} does not fit the {len(binary)} binary bytes sent")
            raw = binary[:size]
        if datatype == "BYTES":
            shape = inputs.check_shape(inp.get("shape"), where)
            if raw is not None:
                elements = inputs.raw_bytes_elements(raw, where)
            else:
                data = inp.get("data")
                if not isinstance(data, list):
                    raise HttpError(400, f"{where}.data must be a list of base64-encoded images")
                elements = [inputs.b64decode(e, f"{where}.data[{i}]") for i, e in enumerate(_flat(data))]
            if len(elements) != math.prod(shape) or not elements:
                raise HttpError(400, f"{where}.shape {shape} needs {math.prod(shape)} images; got {len(elements)}")
            results, rid = await app.infer(image_job(app, elements, [f"{where}[{i}]" for i in range(len(elements))]), req)
            if results[0].task == "raw":
                outputs = _raw_outputs([r.outputs or {} for r in results])
            else:
                outputs = _decoded_outputs([(r.classifications, r.detections) for r in results], results[0].task == "detection")
            timings = results[0].timings.as_dict()
        else:
            if raw is not None:
                x = inputs.raw_tensor(raw, inp.get("shape"), datatype, where)
            else:
                x = inputs.tensor(inp.get("data"), inp.get("shape"), datatype, where)
            (outs, decoded), rid = await app.infer(Job(fn=lambda p, rel: run_tensor(p, rel, x, datatype, where)), req)
            first = app.engine.release.first if app.engine.release else None
            specs = first.model.outputs if first else []
            raw_task = first is not None and first.task == "raw"
            names = first.output_names if raw_task else [s.name for s in specs]  # type: ignore[union-attr]
            outputs = [{"name": n if n else f"output_{k}", "datatype": "FP32", "shape": list(o.shape),
                        "data": np.round(o.astype(np.float64).reshape(-1), 6).tolist()}
                       for k, (o, n) in enumerate(zip(outs, list(names) + [""] * len(outs)))]
            if not raw_task:
                outputs += _decoded_outputs([(c, d) for c, d, _a in decoded], first is not None and first.task == "detection")
            timings = None
        wanted = body.get("outputs")
        if wanted is not None:
            names = [o.get("name") for o in wanted if isinstance(o, dict)] if isinstance(wanted, list) else None
            if not names or not all(isinstance(n, str) for n in names):
                raise HttpError(400, "outputs must be a list of {\"name\": \"...\"} objects (names are strings)")
            have = {o["name"]: o for o in outputs}
            missing = [shown(n, 40) for n in names if n not in have]
            if missing:
                raise HttpError(400, f"unknown output(s) {', '.join(missing[:5])}; this model has {', '.join(have)}")
            outputs = [have[n] for n in names]
        answer: dict[str, Any] = {"model_name": app.name, "model_version": rid, "outputs": outputs,
                                  "parameters": {"release": rid}}
        if "id" in body:
            if not isinstance(body["id"], str):
                raise HttpError(400, "id must be a string")
            answer["id"] = body["id"]
        if timings:
            answer["parameters"]["timings_ms"] = json.dumps(timings)
        return Response.json(answer)

    # ------------------------------------------------------------------ the tutorial's Flash shape
    async def flash(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object {\"session\": ..., \"payload\": {\"inputs\": {\"data\": <base64 image>}}}")
        payload = body.get("payload")
        data = payload.get("inputs", {}).get("data") if isinstance(payload, dict) and isinstance(payload.get("inputs"), dict) else None
        if data is None:
            raise HttpError(400, "payload.inputs.data is missing: send {\"payload\": {\"inputs\": {\"data\": <base64 image>}}}")
        image = inputs.b64decode(data, "payload.inputs.data")
        session = body.get("session") or str(uuid.uuid4())
        results, rid = await self.app.infer(image_job(self.app, [image], ["payload.inputs.data"]), req)
        r = results[0]
        if r.task == "raw":  # no label to give: the tensors themselves
            d = r.as_dict()
            result: dict[str, Any] = {"outputs": d["outputs"], **({"value": d["value"]} if "value" in d else {})}
            return Response.json({"session": session, "result": result, "release": rid})
        top = r.top
        return Response.json({"session": session, "result": {"outputs": top.label if top else None,
                                                             "score": top.score if top else None}, "release": rid})

    # ------------------------------------------------------------------ TF Serving REST
    async def tfs_predict(self, req: Request, name: str, version: str | None = None) -> Response:
        app = self.app
        app.check_model(name, version)
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("instances", body.get("inputs")), list):
            raise HttpError(400, "send {\"instances\": [...]} (tensors as nested lists, or {\"b64\": <image>} objects)")
        instances = body.get("instances", body.get("inputs"))
        if not instances:
            raise HttpError(400, "instances is empty")
        images = [_b64_instance(x) for x in instances]
        if all(i is not None for i in images):
            blobs = [inputs.b64decode(b, f"instances[{i}]") for i, b in enumerate(images)]
            results, _rid = await app.infer(image_job(app, blobs, [f"instances[{i}]" for i in range(len(blobs))]), req)
            if results[0].task == "raw":
                return Response.json({"predictions": [_tfs_row(r.outputs or {}) for r in results]})
            return Response.json({"predictions": [_tfs_decoded(r.classifications, r.detections, r.task) for r in results]})
        if any(i is not None for i in images):
            raise HttpError(400, "instances mix images ({\"b64\": ...}) and tensors; send one kind per request")
        x = inputs.numbers(instances, "instances")
        (outs, decoded), _rid = await app.infer(Job(fn=lambda p, rel: run_tensor(p, rel, x, "FP32", "instances")), req)
        preds: list[Any]
        rel = app.engine.release
        if len(outs) == 1:
            preds = np.round(outs[0].astype(np.float64), 6).tolist()
        elif rel is not None and rel.first.task == "raw":  # TF Serving's row format: one object per instance
            names = rel.first.output_names
            preds = [_tfs_row(dict(zip(names, [o[i : i + 1] for o in outs]))) for i in range(outs[0].shape[0])]
        else:
            preds = [_tfs_decoded(c, d, "detection" if d else "classification") for c, d, _a in decoded]
        return Response.json({"predictions": preds})

    async def tfs_status(self, req: Request, name: str) -> Response:
        self.app.check_model(name)
        rel = self.app.engine.release
        return Response.json({"model_version_status": [{"version": rel.id if rel else "", "state": "AVAILABLE",
                                                        "status": {"error_code": "OK", "error_message": ""}}]})

    # ------------------------------------------------------------------ uploads
    async def upload(self, req: Request) -> Response:
        ctype = req.content_type
        if ctype == "multipart/form-data":
            data = inputs.multipart_field(req.body, req.headers.get("content-type", ""), "file")
        elif ctype.startswith("image/") or ctype == "application/octet-stream":
            data = req.body
        else:
            raise HttpError(400, f"Content-Type '{ctype or 'none'}' is not an upload: send multipart/form-data with a "
                                 "'file' field, or an image/jpeg or image/png body")
        sizes: list[tuple[int, int]] = []
        results, rid = await self.app.infer(image_job(self.app, [data], ["file"], sizes), req)
        return Response.json(upload_record(results[0], self.app.name, rid, sizes[0] if sizes else None))


def upload_record(r: Result, model: str, release: str, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The `infer --json` record for one image, plus the model, release, image size and boxes
    in the image's own pixels (``size``: the image's own, when it was decoded reduced)."""
    d = r.as_dict()
    w, h = size or r.size or (0, 0)
    out: dict[str, Any] = {"model": model, "release": release, "task": r.task, "width": w, "height": h}
    if r.task == "detection":
        out["detections"] = [{**rec, "pixels": dict(zip(("x", "y", "width", "height"), _xywh(det.pixels(w, h))))}
                             for rec, det in zip(d["detections"], r.detections)]
    elif r.task == "raw":
        out["outputs"] = d["outputs"]
        if "value" in d:
            out["value"] = d["value"]
    else:
        out["predictions"] = d["predictions"]
        if "alert" in d:
            out["alert"] = d["alert"]
    out["latency_ms"] = d["latency_ms"]
    out["timings_ms"] = d["timings_ms"]
    return out


def _xywh(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return x0, y0, x1 - x0, y1 - y0


def _oip_body(req: Request) -> tuple[dict[str, Any], bytes]:
    """The JSON part of an infer request and the binary tensor data after it, if any."""
    hlen = req.headers.get("inference-header-content-length")
    if hlen is not None:
        if not (hlen.isascii() and hlen.isdigit()) or int(hlen) > len(req.body):  # not '²', which isdigit() takes
            raise HttpError(400, f"Inference-Header-Content-Length {shown(hlen, 20)} does not fit the {len(req.body)}-byte body")
        head, binary = req.body[: int(hlen)], req.body[int(hlen) :]
        try:
            body = json.loads(head)
        except RecursionError:
            raise HttpError(400, "the inference header is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the inference header is not valid JSON ({exc})") from None
    else:
        body, binary = req.json(), b""
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object with \"inputs\"")
    return body, binary


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    todo = [iter(data)]
    while todo:  # without recursion: any nesting depth
        for x in todo[-1]:
            if isinstance(x, list):
                todo.append(iter(x))
                break
            out.append(x)
        else:
            todo.pop()
    return out


def _decoded_outputs(rows: list[tuple[list[Any], list[Any]]], det: bool) -> list[dict[str, Any]]:
    """Labels, scores and class indexes (and boxes for detections) as OIP tensors [n, k]."""
    n = len(rows)
    items = [d if det else c for c, d in rows]
    k = max((len(x) for x in items), default=0)
    pad = [x + [None] * (k - len(x)) for x in items]
    out = [
        {"name": "label", "datatype": "BYTES", "shape": [n, k], "data": [i.label if i else "" for row in pad for i in row]},
        {"name": "score", "datatype": "FP32", "shape": [n, k], "data": [i.score if i else 0.0 for row in pad for i in row]},
        {"name": "class", "datatype": "INT32", "shape": [n, k], "data": [i.index if i else -1 for row in pad for i in row]},
    ]
    if det:
        out.append({"name": "box", "datatype": "FP32", "shape": [n, k, 4],
                    "data": [v for row in pad for i in row for v in (i.box if i else (0.0, 0.0, 0.0, 0.0))]})
    return out


def _raw_outputs(rows: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Raw results' outputs as OIP tensors, one per output name, the rows stacked: [n, ...]."""
    out = []
    for name in rows[0]:
        stacked = np.stack([r[name][0] if r[name].ndim > 1 and r[name].shape[0] == 1 else r[name] for r in rows])
        out.append({"name": name, "datatype": "FP32", "shape": list(stacked.shape),
                    "data": np.round(stacked.astype(np.float64).reshape(-1), 6).tolist()})
    return out


def _tfs_row(outputs: dict[str, np.ndarray]) -> Any:
    """One instance's raw outputs as TF Serving answers them: the tensor itself for a model with
    one output, else {name: tensor}."""
    from mltool.runtime.predictor import tensor_json

    if len(outputs) == 1:
        return tensor_json(next(iter(outputs.values())))
    return {k: tensor_json(v) for k, v in outputs.items()}


def _b64_instance(x: Any) -> Any:
    """The base64 string of an image instance ({"b64": s} or {"any_name": {"b64": s}}), else None."""
    if isinstance(x, dict):
        if "b64" in x:
            return x["b64"]
        if len(x) == 1:
            v = next(iter(x.values()))
            if isinstance(v, dict) and "b64" in v:
                return v["b64"]
    return None


def _tfs_decoded(classes: list[Any], dets: list[Any], task: str) -> dict[str, Any]:
    if task == "detection":
        return {"labels": [d.label for d in dets], "scores": [d.score for d in dets], "classes": [d.index for d in dets],
                "boxes": [list(d.box) for d in dets]}
    return {"labels": [c.label for c in classes], "scores": [c.score for c in classes], "classes": [c.index for c in classes]}
