"""`mltool serve`: a real server process on loopback, driven by a real HTTP client (requests)
and by raw sockets for what clients should never send."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import requests


def _images(synth_fire_dir: Path) -> list[Path]:
    files = sorted((synth_fire_dir / "fire").iterdir())[:3] + sorted((synth_fire_dir / "no_fire").iterdir())[:3]
    assert {f.suffix for f in files} == {".jpg", ".png"}
    return files


def _release(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")))


def _preds(records) -> list[tuple[str, float]]:
    return [(p["label"], p["score"]) for p in records]


def test_every_protocol_answers_what_infer_prints(cli, serve, fire_models, synth_fire_dir, tmp_path):
    model = fire_models["int8"]
    images = _images(synth_fire_dir)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in images:
        (folder / f.name).write_bytes(f.read_bytes())
    r = cli(["infer", model, folder, "--json"])
    assert r.exit_code == 0, r.stderr
    expected = {Path(rec["name"]).name: _preds(rec["predictions"]) for rec in map(json.loads, r.stdout.splitlines()) if "predictions" in rec}
    assert len(expected) == 6

    s = serve(model)
    rel = _release(model)
    assert s.ready["release"] == rel and s.ready["model"] == "fire" and s.ready["follows"] is None
    http = requests.Session()
    for f in images:
        want = expected[f.name]
        data = f.read_bytes()
        b64 = base64.b64encode(data).decode()
        oip = http.post(f"{s.url}/v2/models/fire/infer", json={"id": "r1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]})
        assert oip.status_code == 200, oip.text
        body = oip.json()
        assert body["model_version"] == rel and body["id"] == "r1" and oip.headers["X-Model-Release"] == rel
        out = {o["name"]: o for o in body["outputs"]}
        assert list(zip(out["label"]["data"], out["score"]["data"])) == want and out["label"]["shape"] == [1, 2]

        flash = http.post(f"{s.url}/predict", json={"session": "abc", "payload": {"inputs": {"data": b64}}}).json()
        assert flash["session"] == "abc" and flash["result"]["outputs"] == want[0][0] and flash["result"]["score"] == want[0][1]

        tfs = http.post(f"{s.url}/v1/models/fire:predict", json={"instances": [{"b64": b64}, {"image_bytes": {"b64": b64}}]}).json()
        assert [list(zip(p["labels"], p["scores"])) for p in tfs["predictions"]] == [want, want]

        up = http.post(f"{s.url}/api/image", files={"file": (f.name, data)}).json()
        assert _preds(up["predictions"]) == want and up["release"] == rel and up["model"] == "fire"
        assert (up["width"], up["height"]) == (96, 96) and up["timings_ms"]["invoke"] > 0
        raw = http.post(f"{s.url}/api/image", data=data, headers={"Content-Type": "image/jpeg" if f.suffix == ".jpg" else "image/png"})
        assert _preds(raw.json()["predictions"]) == want

    # a session is made up when the client sends none
    b64 = base64.b64encode(images[0].read_bytes()).decode()
    flash = http.post(f"{s.url}/predict", json={"payload": {"inputs": {"data": b64}}}).json()
    assert len(flash["session"]) == 36
    # several images in one OIP request, and a chosen output
    oip = http.post(f"{s.url}/v2/models/fire/infer", json={"inputs": [{"name": "i", "shape": [2], "datatype": "BYTES", "data": [b64, b64]}],
                                                          "outputs": [{"name": "label"}]}).json()
    assert [o["name"] for o in oip["outputs"]] == ["label"] and oip["outputs"][0]["shape"] == [2, 2]

    # metadata and health
    assert http.get(f"{s.url}/v2/health/live").json() == {"live": True}
    assert http.get(f"{s.url}/v2/health/ready").json() == {"ready": True, "model": "fire", "release": rel}
    assert http.get(f"{s.url}/v2").json()["name"] == "mltool"
    meta = http.get(f"{s.url}/v2/models/fire").json()
    assert meta["versions"] == [rel] and meta["inputs"][0]["datatype"] == "INT8" and meta["inputs"][0]["shape"][1:] == [64, 64, 3]
    assert meta["parameters"]["labels"] == ["fire", "no_fire"]
    assert http.get(f"{s.url}/v2/models/fire/ready").json() == {"name": "fire", "ready": True}
    assert http.get(f"{s.url}/v2/models/fire/versions/{rel}/ready").status_code == 200
    assert http.get(f"{s.url}/v1/models/fire").json()["model_version_status"][0]["version"] == rel


def test_tensor_inputs_json_and_binary(serve, digits_int8):
    from mltool import Predictor

    p = Predictor(digits_int8)
    spec = p.model.inputs[0]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    want = [[(c.label, c.score) for c in p.decode([o[i : i + 1] for o in p.model.run(x)])[0]] for i in range(2)]
    q = p.model.run(x[:1])
    s = serve(digits_int8)
    http = requests.Session()
    url = f"{s.url}/v2/models/digits/infer"
    body = http.post(url, json={"inputs": [{"name": "x", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}).json()
    out = {o["name"]: o for o in body["outputs"]}
    labels = np.array(out["label"]["data"]).reshape(2, 3)
    scores = np.array(out["score"]["data"]).reshape(2, 3)
    assert [list(zip(labels[i], scores[i])) for i in range(2)] == want
    raw = out[p.model.outputs[0].name]
    assert raw["shape"] == [2, 10] and np.allclose(np.array(raw["data"][:10]), q[0].reshape(-1), atol=1e-6)

    # already-quantized INT8 values, as JSON and through the binary tensor data extension
    xq = (np.round(x[:1] / spec.scale) + spec.zero_point).clip(-128, 127).astype(np.int8)
    j = http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "INT8", "data": xq.reshape(-1).tolist()}]}).json()
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "INT8", "parameters": {"binary_data_size": xq.nbytes}}]}).encode()
    b = http.post(url, data=header + xq.tobytes(), headers={"Inference-Header-Content-Length": str(len(header)),
                                                            "Content-Type": "application/octet-stream"}).json()
    assert j["outputs"] == b["outputs"]
    assert {o["name"]: o["data"] for o in j["outputs"]}["label"] == [lbl for lbl, _ in want[0]]

    # TF Serving with tensor instances: the raw output rows
    tfs = http.post(f"{s.url}/v1/models/digits:predict", json={"instances": x.tolist()}).json()
    assert np.array(tfs["predictions"]).shape == (2, 10)

    # BYTES in binary form: 4-byte length, then the encoded image
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buf, "PNG")
    img = buf.getvalue()
    blob = struct.pack("<I", len(img)) + img
    header = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}).encode()
    r = http.post(url, data=header + blob, headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200 and r.json()["outputs"][0]["name"] == "label"


def test_detection_boxes_in_the_images_pixels(cli, serve, detector, tmp_path):
    from PIL import Image

    img = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (230, 180, 20)).save(img)
    labels = tmp_path / "labels.txt"
    labels.write_text("person\ncar\ndog\n")
    opts = ["--labels", labels, "--mean", "0", "--std", "255"]
    want = json.loads(cli(["infer", detector, img, *opts, "--json"]).stdout.splitlines()[0])["detections"]
    s = serve(detector, *opts)
    up = requests.post(f"{s.url}/api/image", files={"file": ("wide.png", img.read_bytes())}).json()
    assert up["task"] == "detection" and (up["width"], up["height"]) == (200, 100)
    assert [(d["label"], d["score"], d["box"]) for d in up["detections"]] == [(d["label"], d["score"], d["box"]) for d in want]
    assert up["detections"][0]["pixels"] == {"x": 20, "y": 10, "width": 100, "height": 40}  # box 0.1,0.1,0.5,0.6
    oip = requests.post(f"{s.url}/v2/models/ssd_like/infer", json={"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES",
                                                                              "data": [base64.b64encode(img.read_bytes()).decode()]}]}).json()
    box = [o for o in oip["outputs"] if o["name"] == "box"][0]
    assert box["shape"] == [1, 2, 4] and box["data"][:4] == [0.1, 0.1, 0.5, 0.6]


def _raw(port: int, data: bytes, read_all: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                b = sock.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_all:
                break
        return b"".join(chunks)


def test_broken_requests_get_a_reason_and_never_wedge_the_server(serve, digits_int8):
    s = serve(digits_int8, "--max-body", "2KB", "--read-timeout", "1")
    url = f"{s.url}/v2/models/digits/infer"
    http = requests.Session()

    def err(resp, status):
        assert resp.status_code == status, resp.text
        return resp.json()["error"]

    assert "not valid JSON" in err(http.post(url, data=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert "inputs must be a list" in err(http.post(url, json={"inputs": {}}), 400)
    assert "needs 64 values; data has 3" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [1, 2, 3]}]}), 400)
    assert "does not fit the model's input [-1, 8, 8, 1]" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1, 4, 4, 4], "datatype": "FP32", "data": [0] * 64}]}), 400)
    assert "datatype 'FP64' is not supported" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0]}]}), 400)
    assert "does not match the model's INT8 input" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "UINT8", "data": [0] * 64}]}), 400)
    assert "outside INT8" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "INT8", "data": [300] * 64}]}), 400)
    assert "only numbers" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [[1, 2], [3]]}]}), 400)
    assert "is not valid base64" in err(http.post(url, json={"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}), 400)
    assert "cannot read image file (UnidentifiedImageError: cannot identify image file)" in err(http.post(f"{s.url}/api/image", data=b"GIF89a-not-really", headers={"Content-Type": "image/gif"}), 400)
    assert "no field 'file' (fields: photo)" in err(http.post(f"{s.url}/api/image", files={"photo": ("a.png", b"x")}), 400)
    assert "is not an upload" in err(http.post(f"{s.url}/api/image", data=b"x", headers={"Content-Type": "text/plain"}), 400)
    assert "payload.inputs.data is missing" in err(http.post(f"{s.url}/predict", json={"session": 1}), 400)
    assert "model 'nope' is not served here" in err(http.post(f"{s.url}/v2/models/nope/infer", json={}), 404)
    assert "no route for GET /nothing" in err(http.get(f"{s.url}/nothing"), 404)
    assert err(http.get(url), 405)

    big = http.post(url, data=b"x" * 3000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "at most 2048" in big.json()["error"]

    def gen(n):
        for _ in range(n):
            yield b"[" * 500
    assert http.post(url, data=gen(6)).status_code == 413  # chunked, over the limit
    ok_chunked = http.post(url, data=(c for c in [b'{"inputs": [{"name": "x", "shape": [1, 8, 8, 1], ',
                                                 b'"datatype": "FP32", "data": ' + json.dumps([0.1] * 64).encode() + b"}]}"]))
    assert ok_chunked.status_code == 200

    port = s.port
    assert b" 400 " in _raw(port, b"GARBAGE\r\n\r\n")
    assert b" 400 " in _raw(port, b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    assert b" 400 " in _raw(port, b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert b" 431 " in _raw(port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert b" 408 " in _raw(port, b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # then silence
    # pipelined keep-alive requests are answered in order
    two = _raw(port, b"GET /v2/health/live HTTP/1.1\r\n\r\nGET /v2 HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2 and two.index(b'"live"') < two.index(b'"mltool"')

    assert http.get(f"{s.url}/v2/health/ready").json()["ready"] is True
    ok = http.post(url, json={"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.5] * 64}]})
    assert ok.status_code == 200
    metrics = http.get(f"{s.url}/metrics").text
    assert 'mltool_http_requests_total{route="/v2/models/{name}/infer",code="400"} 9' in metrics
    assert 'mltool_http_requests_total{route="unparsed",code="408"} 1' in metrics
    assert s.proc.poll() is None


def test_api_key_cors_and_exposure_warning(serve, digits_int8, tmp_path):
    key = "s3cret-key-0123456789"
    s = serve(digits_int8, "--cors-origin", "https://dash.example", env={"MLTOOL_API_KEY": key})
    url = f"{s.url}/v2/models/digits"
    denied = requests.get(url)
    assert denied.status_code == 401 and "missing or wrong API key" in denied.json()["error"]
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    assert requests.get(url, headers={"X-API-Key": key}).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert requests.get(f"{s.url}/metrics", auth=("anyone", key)).status_code == 200  # browsers: Basic, key as password
    assert requests.get(f"{s.url}/metrics").status_code == 401
    assert requests.get(f"{s.url}/v2/health/ready").status_code == 200  # health is exempt
    assert requests.get(f"{s.url}/v2/health/live").status_code == 200
    # CORS: the listed origin only
    ok = requests.get(url, headers={"X-API-Key": key, "Origin": "https://dash.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example" and "X-Model-Release" in ok.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in requests.get(url, headers={"X-API-Key": key, "Origin": "https://evil.example"}).headers
    pre = requests.options(url, headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "x-api-key"})
    assert pre.status_code == 204 and "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
    # the key is never printed, nor on the command line
    assert key not in s.stderr and key not in json.dumps(s.lines)
    assert key.encode() not in Path(f"/proc/{s.proc.pid}/cmdline").read_bytes()

    keyfile = tmp_path / "key"
    keyfile.write_text(key + "\n")
    s2 = serve(digits_int8, "--api-key-file", keyfile)
    assert requests.get(f"{s2.url}/v2/models/digits").status_code == 401
    assert requests.get(f"{s2.url}/v2/models/digits", headers={"X-API-Key": key}).status_code == 200
    nocors = requests.options(f"{s2.url}/v2/models/digits", headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "POST"})
    assert nocors.status_code == 204 and "Access-Control-Allow-Origin" not in nocors.headers  # CORS is off by default

    exposed = serve(digits_int8, "--host", "0.0.0.0")
    assert "warning: listening on 0.0.0.0 without an API key" in exposed.stderr
    assert "warning" not in s.stderr


def test_full_queue_answers_503_with_retry_after(serve, digits_int8, slow_jpeg):
    data = slow_jpeg
    s = serve(digits_int8, "--workers", "1", "--queue", "1", "--max-body", "40MB")
    results = []

    def post():
        r = requests.post(f"{s.url}/api/image", data=data, headers={"Content-Type": "image/jpeg"})
        results.append((r.status_code, r.headers.get("Retry-After"), r.json()))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(c for c, _, _ in results)
    assert codes.count(503) >= 2 and codes.count(200) >= 2, codes
    refused = [r for r in results if r[0] == 503]
    assert all(ra == "1" and "queue is full" in body["error"] for _, ra, body in refused)
    metrics = requests.get(f"{s.url}/metrics").text
    assert f'mltool_http_requests_total{{route="/api/image",code="503"}} {codes.count(503)}' in metrics
    assert "mltool_queue_depth 0" in metrics and "mltool_queue_capacity 1" in metrics
    assert requests.get(f"{s.url}/v2/health/ready").status_code == 200


def test_micro_batching_answers_each_request_alone(serve, digits_int8, tmp_path):
    import io

    from PIL import Image

    imgs = []
    for v in range(0, 256, 16):
        buf = io.BytesIO()
        Image.new("L", (8, 8), v).save(buf, "PNG")
        imgs.append(buf.getvalue())
    single = serve(digits_int8)
    want = [requests.post(f"{single.url}/api/image", data=b, headers={"Content-Type": "image/png"}).json()["predictions"] for b in imgs]
    s = serve(digits_int8, "--max-batch", "8", "--batch-wait", "20")
    assert s.ready["batchable"] is True
    got: dict[int, list] = {}

    def post(i):
        got[i] = requests.post(f"{s.url}/api/image", data=imgs[i], headers={"Content-Type": "image/png"}).json()["predictions"]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(imgs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(imgs))] == want
    m = requests.get(f"{s.url}/metrics").text
    inferences, invokes = _metric(m, "mltool_inferences_total"), _metric(m, "mltool_invokes_total")
    assert inferences == len(imgs) and invokes < inferences  # some requests shared an invoke


def test_bad_options_are_usage_errors(cli, digits_int8, tmp_path):
    r = cli(["serve", digits_int8, "--max-body", "lots"])
    assert r.exit_code == 2 and "--max-body 'lots' is not a size" in r.stderr
    r = cli(["serve", digits_int8, "--cors-origin", "dash.example"])
    assert r.exit_code == 2 and "is not an origin" in r.stderr
    r = cli(["serve", "nosuchmodel", "--root", tmp_path])
    assert r.exit_code == 1 and "no deployed model named 'nosuchmodel'" in r.stderr
    r = cli(["serve", digits_int8, "--api-key-file", tmp_path / "missing"])
    assert r.exit_code == 2 and "cannot read --api-key-file" in r.stderr
    r = cli(["serve", digits_int8], env={"MLTOOL_API_KEY": "short"})
    assert r.exit_code == 2 and "shorter than 8" in r.stderr and "short" not in r.stderr.replace("shorter", "")


def test_dockerfile_healthcheck_and_entrypoint_against_a_real_server(serve, digits_int8):
    """Docker cannot build here (no daemon): check what the image runs, against a real server."""
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim-bookworm" in text and "\nUSER mltool\n" in text and 'VOLUME ["/models"]' in text
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry[:2] == ["mltool", "serve"] and entry[entry.index("--host") + 1] == "0.0.0.0"
    check = json.loads(re.search(r"^  CMD (\[.*\])$", text, re.M).group(1))
    s = serve(digits_int8, "--api-key", "k" * 16)  # health needs no key
    cmd = [sys.executable if c == "python" else c.replace(":8000/", f":{s.port}/") for c in check]
    assert subprocess.run(cmd, timeout=30).returncode == 0
    s.stop()
    assert subprocess.run(cmd, capture_output=True, timeout=30).returncode != 0


def test_index_page_endpoints_and_reachable_addresses(serve, digits_int8, tmp_path):
    """Without a live view, / is a page naming what this server serves (it was a JSON 404); the
    start line lists the endpoints; --host 0.0.0.0 prints addresses people can open instead."""
    s = serve(digits_int8, "--name", "digits")
    page = requests.get(f"{s.url}/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for path in ("/v2/models/digits/infer", "/v1/models/digits:predict", "/api/image", "/metrics"):
        assert path in page.text
    assert s.ready["release"] in page.text
    assert "POST /v2/models/digits/infer" in s.ready["endpoints"] and s.ready["urls"] == []
    assert "endpoints: POST /v2/models/digits/infer" in s.stderr

    key = tmp_path / "key"
    key.write_text("k" * 24)
    exposed = serve(digits_int8, "--host", "0.0.0.0", "--api-key-file", key)
    assert requests.get(f"http://127.0.0.1:{exposed.port}/").status_code == 401  # the page, like the API, needs the key
    assert all("0.0.0.0" not in u and u.endswith(f":{exposed.port}") for u in exposed.ready["urls"])
    if exposed.ready["urls"]:
        assert f"reachable at {exposed.ready['urls'][0]}" in exposed.stderr
