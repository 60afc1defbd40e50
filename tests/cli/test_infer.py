"""`mltool infer` on real files, real videos, a real HTTP MJPEG stream, signals and stdin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mltool.runtime.infer import InferConfig, run_infer


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


def test_directory_with_corrupt_image_reports_and_continues(cli, fire_models, synth_fire_dir, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for f in sorted((synth_fire_dir / "fire").glob("*.png"))[:3] + sorted((synth_fire_dir / "no_fire").glob("*.png"))[:3]:
        shutil.copy(f, d / f"{f.parent.name}_{f.name}")
    (d / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = cli(["infer", fire_models["int8"], d, "--json"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    results = [o for o in out if "predictions" in o]
    errors = [o for o in out if o.get("event") == "error"]
    summary = out[-1]
    assert len(results) == 6 and len(errors) == 1
    assert errors[0]["name"] == str(d / "zz_broken.jpg") and "cannot read image" in errors[0]["message"]
    assert summary["event"] == "summary" and summary["frames"] == 6 and summary["errors"] == 1
    for res in results:
        assert {p["label"] for p in res["predictions"]} == {"fire", "no_fire"}
        assert sum(p["score"] for p in res["predictions"]) == pytest.approx(1.0, abs=0.02)
        assert res["latency_ms"] > 0 and set(res["timings_ms"]) == {"read", "preprocess", "invoke", "postprocess"}
    assert "cannot read image" in r.stderr


def test_int8_and_uint8_io_models_agree(cli, fire_models, synth_fire_dir):
    src = str(synth_fire_dir / "fire")
    a = [o for o in _lines(cli(["infer", fire_models["int8"], src, "--json", "-k", "1"]).stdout) if "predictions" in o]
    b = [o for o in _lines(cli(["infer", fire_models["uint8"], src, "--json", "-k", "1"]).stdout) if "predictions" in o]
    assert len(a) == len(b) == 40
    agree = np.mean([x["predictions"][0]["label"] == y["predictions"][0]["label"] for x, y in zip(a, b)])
    assert agree >= 0.95
    diffs = [abs(x["predictions"][0]["score"] - y["predictions"][0]["score"]) for x, y in zip(a, b)]
    assert max(diffs) < 0.1


def test_video_file_with_alert_and_save(cli, fire_models, fire_video, tmp_path):
    import cv2

    save = tmp_path / "out"
    r = cli(["infer", fire_models["int8"], "--source", fire_video, "--alert-threshold", "0.5", "--every", "2",
             "--save", save, "--json"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    results = [o for o in out if "predictions" in o]
    assert len(results) == 20 and out[-1]["skipped"] == 20
    for res in results:
        a = res["alert"]
        assert a["class"] == "fire" and a["threshold"] == 0.5
        assert a["active"] == (a["score"] >= 0.5)
        fire_score = next(p["score"] for p in res["predictions"] if p["label"] == "fire")
        assert a["score"] == pytest.approx(fire_score, abs=1e-3)
    first_half = [r_["alert"]["active"] for r_ in results[:10]]
    second_half = [r_["alert"]["active"] for r_ in results[10:]]
    assert sum(first_half) > sum(second_half)  # fire frames come first in the video
    assert out[-1]["alerts"] == sum(first_half) + sum(second_half)
    video = save / "fire_annotated.mp4"
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    cap.release()
    assert len((save / "predictions.jsonl").read_text().splitlines()) == 20


def test_signal_files_windows_and_stdin(cli, ecg_model, synth_ecg_dir, tmp_path):
    from mltool.data.signals import read_signal

    normal = read_signal(sorted((synth_ecg_dir / "normal").glob("*.npy"))[0])
    arr = read_signal(sorted((synth_ecg_dir / "arrhythmia").glob("*.npy"))[0])
    long = np.concatenate([normal, arr, normal])
    np.save(tmp_path / "rec.npy", long)
    r = cli(["infer", ecg_model, tmp_path / "rec.npy", "--json"])
    assert r.exit_code == 0, r.stderr
    res = [o for o in _lines(r.stdout) if "predictions" in o]
    assert [x["name"] for x in res] == [f"{tmp_path / 'rec.npy'}@{t:.2f}s" for t in (0, 10, 20)]
    assert [x["predictions"][0]["label"] for x in res] == ["normal", "arrhythmia", "normal"]
    r = cli(["infer", ecg_model, tmp_path / "rec.npy", "--hop", "1800", "--json"])
    assert len([o for o in _lines(r.stdout) if "predictions" in o]) == 5
    # WAV at the model's rate
    pcm = np.clip(long / np.abs(long).max() * 30000, -32768, 32767).astype(np.int16)
    with wave.open(str(tmp_path / "rec.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(360), w.writeframes(pcm.tobytes())
    r = cli(["infer", ecg_model, tmp_path / "rec.wav", "--json", "--alert-threshold", "0.5"])
    res = [o for o in _lines(r.stdout) if "predictions" in o]
    assert len(res) == 3 and res[1]["alert"]["class"] == "arrhythmia"
    # stdin, as from an ADC reader: mltool infer model -
    text = "\n".join(f"{v:.5f}" for v in long[:7200]) + "\n"
    from typer.testing import CliRunner

    from mltool.cli import app

    out = CliRunner(env={"COLUMNS": "100"}).invoke(app, ["infer", str(ecg_model), "-", "--json"], input=text)
    assert out.exit_code == 0, out.stderr
    res = [o for o in _lines(out.stdout) if "predictions" in o]
    assert [x["predictions"][0]["label"] for x in res] == ["normal", "arrhythmia"]
    assert res[0]["source"] == "stdin"


def test_wrong_signal_length_and_rate(cli, ecg_model, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros(1000, np.float32))
    r = cli(["infer", ecg_model, tmp_path / "short.npy"])
    assert r.exit_code == 1
    assert f"signal file {tmp_path / 'short.npy'} has 1000 samples, the model needs windows of 3600" in r.stderr
    with wave.open(str(tmp_path / "hifi.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(44100), w.writeframes(np.zeros(44100 * 11, np.int16).tobytes())
    r = cli(["infer", ecg_model, tmp_path / "hifi.wav"])
    assert r.exit_code == 1 and "sampled at 44100 Hz, the model expects 360 Hz" in r.stderr


def test_source_and_model_mismatch_and_unknown_source(cli, ecg_model, fire_models, tmp_path, synth_fire_dir):
    img = next((synth_fire_dir / "fire").glob("*.png"))
    r = cli(["infer", ecg_model, img])
    assert r.exit_code == 2 and "this model takes 1-D signals" in r.stderr
    np.save(tmp_path / "sig.npy", np.zeros(3600, np.float32))
    r = cli(["infer", fire_models["int8"], tmp_path / "sig.npy"])
    assert r.exit_code == 2 and "holds signal files, but this model takes images" in r.stderr
    r = cli(["infer", fire_models["int8"], tmp_path / "nope.jpg"])
    assert r.exit_code == 1 and f"source {tmp_path / 'nope.jpg'} does not exist" in r.stderr
    r = cli(["infer", fire_models["int8"], "ftp://example/x"])
    assert r.exit_code == 2 and "unknown stream scheme 'ftp://'" in r.stderr
    r = cli(["infer", fire_models["int8"]])
    assert r.exit_code == 2 and "no source given" in r.stderr


def test_model_without_metadata_uses_flags(cli, foreign_models, tmp_path):
    img = tmp_path / "x.png"
    Image.new("L", (6, 6), 200).save(img)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    r = cli(["infer", foreign_models["uint8"], img, "--labels", labels, "--json"])
    assert r.exit_code == 0, r.stderr
    res = _lines(r.stdout)[0]
    assert {p["label"] for p in res["predictions"]} == {"a", "b", "c"}
    assert "feeding raw pixels" in r.stderr
    r2 = cli(["infer", foreign_models["uint8"], img, "--labels", labels, "--mean", "0", "--std", "255", "--json"])
    assert r2.exit_code == 0 and "feeding raw pixels" not in r2.stderr


def test_object_detection_outputs(cli, detector, tmp_path):
    img = tmp_path / "reddish.png"
    Image.new("RGB", (64, 64), (230, 180, 20)).save(img)
    labels = tmp_path / "labels.txt"
    labels.write_text("person\ncar\ndog\n")
    r = cli(["infer", detector, img, "--labels", labels, "--mean", "0", "--std", "255", "--json", "--save", tmp_path / "out"])
    assert r.exit_code == 0, r.stderr
    res = _lines(r.stdout)[0]
    dets = res["detections"]
    assert [d["label"] for d in dets] == ["person", "car"]  # dog scores 0.1 * blue < 0.5
    assert dets[0]["score"] == pytest.approx(230 / 255, abs=0.01) and dets[0]["box"] == [0.1, 0.1, 0.5, 0.6]
    assert (tmp_path / "out" / "reddish.jpg").is_file()
    r = cli(["infer", detector, img, "--labels", labels, "--mean", "0", "--std", "255", "--task", "detect",
             "--score-threshold", "0.8", "--json"])
    assert [d["label"] for d in _lines(r.stdout)[0]["detections"]] == ["person"]


def test_mjpeg_stream_newest_frame_and_reconnect(fire_models, mjpeg):
    server = mjpeg(fps=60)
    results, events = [], []
    restarted = threading.Event()

    def on_result(r):
        results.append(r)
        time.sleep(0.05)  # inference slower than the camera: stale frames must be dropped
        if len(results) == 8 and not restarted.is_set():
            restarted.set()

            def bounce():
                server.stop()
                time.sleep(1.0)
                server.start()

            threading.Thread(target=bounce, daemon=True).start()

    summary = run_infer(InferConfig(model=fire_models["int8"], source=server.url, max_frames=20, timeout_s=2.0),
                        on_result=on_result, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert summary.frames == 20 and summary.stopped_by == "max frames"
    assert "lost" in kinds and "reconnected" in kinds
    assert summary.reconnects >= 1
    assert summary.dropped > 0
    seqs = [int(r.name.rsplit("#", 1)[1]) for r in results]
    assert seqs == sorted(seqs) and max(b - a for a, b in zip(seqs, seqs[1:])) > 1
    ages = [time.time() - r.timestamp for r in results[-3:]]
    assert max(ages) < 2.0  # newest frames, not a backlog


def test_stalled_stream_times_out_instead_of_hanging(fire_models, mjpeg):
    server = mjpeg(fps=30)
    server.stall = True
    t0 = time.monotonic()
    events = []
    summary = run_infer(InferConfig(model=fire_models["int8"], source=server.url, timeout_s=0.5, max_reconnects=1),
                        on_event=events.append)
    assert time.monotonic() - t0 < 15
    kinds = [e["event"] for e in events]
    assert "lost" in kinds and summary.frames == 0
    assert any("gave up after 1 reconnection attempts" in e["message"] for e in events)


def test_unreachable_stream_is_a_clear_error(cli, fire_models):
    r = cli(["infer", fire_models["int8"], "http://127.0.0.1:9/stream", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "cannot open stream http://127.0.0.1:9/stream" in r.stderr


def test_sigterm_stops_cleanly_with_summary(fire_models, mjpeg):
    server = mjpeg(fps=20)
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "infer", str(fire_models["int8"]), server.url, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # stopped by a signal: 130 after the summary, as every command
    lines = _lines(out)
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["stopped_by"] == "SIGTERM"
    assert summary["frames"] >= 5 and summary["frames"] == len([x for x in lines if "predictions" in x])
    assert "stopped by SIGTERM" in err


DEVICE_ONLY = r"""
import json, sys, time
t0 = time.perf_counter()
for blocked in ("tensorflow", "keras", "sklearn", "matplotlib"):
    sys.modules[blocked] = None     # importing any of them now fails
from mltool.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert e.code in (0, None), e.code
print(json.dumps({"wall": time.perf_counter() - t0}), file=sys.stderr)
"""


@pytest.mark.parametrize("cmd", ["infer", "bench", "inspect", "doctor"])
def test_device_path_runs_without_tensorflow(cmd, fire_models, fire_video):
    args = {
        "infer": ["infer", str(fire_models["int8"]), str(fire_video), "--max-frames", "3", "--json"],
        "bench": ["bench", str(fire_models["int8"]), "--runs", "20", "--pipeline", str(fire_video),
                  "--pipeline-frames", "5", "--json"],
        "inspect": ["inspect", str(fire_models["int8"]), "--json"],
        "doctor": ["doctor", "--json"],
    }[cmd]
    proc = subprocess.run([sys.executable, "-c", DEVICE_ONLY, *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_bench_json_rows_ratio_and_pipeline(cli, fire_models, fire_video):
    r = cli(["bench", fire_models["int8"], fire_models["uint8"], "--threads", "1,2", "--runs", "30",
             "--pipeline", fire_video, "--pipeline-frames", "10", "--json"])
    assert r.exit_code == 0, r.stderr
    res = r.json()
    rows = res["rows"]
    assert [(Path(x["model"]).parent.name[:9], x["threads"]) for x in rows] == [
        ("fire_int8", 1), ("fire_uint", 1), ("fire_int8", 2), ("fire_uint", 2)]
    for x in rows:
        assert x["runs"] == 30 and x["latency_ms"]["min"] <= x["latency_ms"]["median"] <= x["latency_ms"]["p90"] <= x["latency_ms"]["p99"] <= x["latency_ms"]["max"]
        assert x["init_ms"] > 0 and x["first_ms"] > 0 and x["peak_rss_mib"] > 10
        base = next(b for b in rows if b["threads"] == x["threads"])
        assert x["vs_first"] == pytest.approx(x["latency_ms"]["median"] / base["latency_ms"]["median"], rel=1e-3)
    p = res["pipeline"][0]
    assert p["frames"] == 10 and set(p["stages_median_ms"]) == {"read", "preprocess", "invoke", "postprocess"}
    assert p["overhead_beyond_invoke_ms"] >= 0
    r = cli(["bench", fire_models["int8"], "--threads", "one"])
    assert r.exit_code == 2 and "is not a comma-separated list" in r.stderr


def test_doctor_reports_runtime(cli):
    r = cli(["doctor", "--json", "--no-camera-probe"])
    assert r.exit_code == 0
    rep = r.json()
    assert rep["runtime"]["active"] == "ai_edge_litert" and rep["ok"] is True
    assert rep["cores"] == os.cpu_count()
    assert {c["name"] for c in rep["checks"]} >= {"python", "numpy", "tflite runtime", "opencv", "cameras (V4L2)", "cameras (libcamera)", "--camera",
                                                 "i2c (sensors)"}
    i2c = next(c for c in rep["checks"] if c["name"] == "i2c (sensors)")
    assert i2c["status"] == "info" and "no /dev/i2c-* buses; smbus2 0." in i2c["detail"] and rep["i2c_buses"] == []


def test_camera_shorthand_parsing(cli, fire_models):
    # No camera exists here: the error names which device --camera resolved to.
    r = cli(["infer", fire_models["int8"], "--camera", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "no camera found: picamera2 not importable and no V4L2 capture device" in r.stderr
    r = cli(["infer", fire_models["int8"], "--camera", "0", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "cannot open camera 0" in r.stderr
    r = cli(["infer", fire_models["int8"], "--camera", "3", "--stall-timeout", "1"])
    assert r.exit_code == 1 and "cannot open camera 3" in r.stderr
    r = cli(["infer", fire_models["int8"], "--camera", "/dev/video7"])
    assert r.exit_code == 1 and "cannot open camera /dev/video7" in r.stderr


def test_video_over_http_goes_through_ffmpeg(cli, fire_models, synth_fire_dir, tmp_path):
    """A non-MJPEG HTTP source (an MJPG AVI file served over real HTTP) is read by OpenCV/FFmpeg
    with open/read timeouts: the same path rtsp:// takes."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    avi = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for f in sorted((synth_fire_dir / "fire").glob("*.png"))[:30]:
        w.write(cv2.resize(cv2.imread(str(f)), (320, 240)))
    w.release()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/clip.avi"
        r = cli(["infer", fire_models["int8"], url, "--max-frames", "5", "--json"])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    results = [o for o in out if "predictions" in o]
    assert len(results) == 5 and all(x["source"] == url for x in results)
    assert out[-1]["stopped_by"] == "max frames" and out[-1]["errors"] == 0
    assert "on stream" in r.stderr


def test_save_inside_the_source_folder_is_refused(cli, fire_models, tmp_path):
    """Issue 18 item 16: annotated outputs saved inside the folder would be read as inputs by
    the next run over it."""
    src = tmp_path / "photos"
    src.mkdir()
    Image.new("RGB", (64, 64), (230, 180, 20)).save(src / "a.png")
    for save in (src, src / "out"):
        r = cli(["infer", fire_models["int8"], src, "--save", save])
        assert r.exit_code == 2, r.stderr
        assert f"--save {save} is inside the source folder {src}" in r.stderr
        assert f"--save {tmp_path / 'photos-annotated'}" in r.stderr
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]
    r = cli(["infer", fire_models["int8"], src, "--save", tmp_path / "photos-annotated", "--json"])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "photos-annotated" / "a.jpg").is_file()


def test_save_keeps_a_large_jpeg_at_its_own_size(cli, fire_models, tmp_path):
    """The model is fed a reduced decode of a big JPEG (as training read it); what --save writes is
    the picture at its own size (it was 1/8: 1280x960 -> 160x120)."""
    rng = np.random.default_rng(1)
    big = tmp_path / "in" / "big.jpg"
    big.parent.mkdir()
    Image.fromarray(rng.integers(0, 255, (960, 1280, 3), dtype=np.uint8)).save(big, quality=90)
    r = cli(["infer", fire_models["int8"], big, "--save", tmp_path / "out"])
    assert r.exit_code == 0, r.stderr
    with Image.open(tmp_path / "out" / "big.jpg") as im:
        assert im.size[0] == 1280 and im.size[1] > 960  # the picture, then the results strip below it


def test_delegate_none_runs_the_builtin_kernels(cli, digits_int8, tmp_path):
    """--delegate none leaves even the default XNNPACK out (under qemu-user its int8 kernels compute
    wrong answers; the built-in ones do not): same answers here, and the header says so."""
    from mltool.data.tasks import write_samples

    samples = write_samples("digits", tmp_path / "s", 6)
    a = cli(["infer", digits_int8, samples[0].parent, "--json"])
    b = cli(["infer", digits_int8, samples[0].parent, "--json", "--delegate", "none"])
    assert a.exit_code == b.exit_code == 0, b.stderr
    labels = lambda r: [json.loads(ln)["predictions"][0]["label"] for ln in r.stdout.splitlines() if '"predictions"' in ln]
    assert labels(a) == labels(b) and len(labels(b)) == 6
    assert "delegate none" in b.stderr
