"""Hostile and careless input: bounded memory, no tracebacks, nothing overwritten, no half-done
rollout. Each case here was a crash, a runaway, a traceback, a wrong answer with exit 0 or lost
data before."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.mjpeg_server import MISBEHAVIOURS

NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--ambient-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]  # root without its permission override


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mltool(*args: str, env: dict | None = None, timeout: float = 300, prefix: list[str] | None = None):
    return subprocess.run([*(prefix or []), sys.executable, "-m", "mltool", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- severe: memory, models, data


@pytest.mark.parametrize("how", sorted(MISBEHAVIOURS))
def test_misbehaving_stream_is_lost_with_bounded_memory(how, fire_models, mjpeg):
    server = mjpeg(misbehave=how)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "infer", str(fire_models["int8"]), server.url, "--stall-timeout", "1",
                             "--max-reconnects", "1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=90)
    elapsed = time.monotonic() - t0
    events = [e for e in _lines(out) if e.get("event") in ("lost", "error")]
    assert proc.returncode == 1 and "Traceback" not in err
    assert any(e["event"] == "lost" for e in events) and "gave up after 1 reconnection attempts" in err
    assert elapsed < 60
    print(f"{how}: {elapsed:.1f}s; {events[0]['message']}")


def test_misbehaving_stream_peak_memory(fire_models, mjpeg):
    """Peak RSS of `infer` against a stream of endless bytes with no line break (it grew by
    hundreds of MB per second before), next to a well-behaved stream."""
    peaks = {}
    for how in ("no_newline", None):
        server = mjpeg(misbehave=how, fps=30)
        args = [sys.executable, "-m", "mltool", "infer", str(fire_models["int8"]), server.url, "--stall-timeout", "1",
                "--max-reconnects", "1", *(["--max-frames", "20"] if how is None else [])]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        peaks[how or "good"] = usage.ru_maxrss / 1024
    assert peaks["no_newline"] < peaks["good"] + 64, peaks  # MiB: no growth beyond a normal run
    print(f"peak RSS (MiB): {peaks}")


def test_fuzzed_models_never_traceback_hang_or_run_away(fire_models, tmp_path):
    """1,000 mutants of two real models (one with mltool's metadata, one with standard TFLite
    Metadata and a packed label file), each through `inspect` and `infer` in a forked child with
    a 3 GiB address-space limit and a 20 s timeout."""
    from tests.fuzz_models import run

    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img)
    script = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; from tests.fuzz_models import run;"
              f"print(json.dumps([run(Path(m), Path({str(img)!r}), 500, s, Path({str(tmp_path)!r}) / str(s)) "
              f"for s, m in ((1, {str(fire_models['int8'])!r}), (2, {str(REPO / 'tests/data/foreign/classifier_tfhub_style.tflite')!r}))]))")
    assert run  # the harness is importable here too
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    for rep in reports:
        for cmd, t in rep["table"].items():
            print(f"{Path(rep['model']).name} {cmd}: {t}; peak {rep['peak_rss_mib']} MiB")
            assert t["traceback"] == t["signal"] == t["hang"] == 0, rep["misbehaved"][:3]
            assert sum(t.values()) == 500 and t["clean error"] > 100 and t["success"] > 10
        assert rep["peak_rss_mib"] < 1500


def test_absurd_tensor_sizes_are_refused_before_allocation(cli, fire_models, tmp_path):
    from mltool._tf import import_tensorflow

    import_tensorflow()
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(fire_models["int8"].read_bytes()), 0)
    sg = model.subgraphs[0]
    victim = next(t for t in sg.tensors if t.buffer == 0 or not model.buffers[t.buffer].data)
    victim.shape = [1, 60000, 60000, 64]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    bad = tmp_path / "bomb.tflite"
    bad.write_bytes(bytes(b.Output()))
    t0 = time.monotonic()
    for cmd in (["inspect", bad], ["infer", bad, tmp_path]):
        r = cli(cmd)
        assert r.exit_code == 1 and "is damaged or not an edge model" in r.stderr and "GiB" in r.stderr
    assert time.monotonic() - t0 < 10


def test_save_never_writes_over_inputs_and_names_never_collide(cli, fire_models, synth_fire_dir, tmp_path):
    src = tmp_path / "pics"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    fire = sorted((synth_fire_dir / "fire").glob("*"))
    shutil.copy(next(f for f in fire if f.suffix == ".png"), src / "a" / "img.png")
    shutil.copy(next(f for f in fire if f.suffix == ".png"), src / "b" / "img.png")
    shutil.copy(next(f for f in fire if f.suffix == ".jpg"), src / "img.jpg")
    shutil.copy(next(f for f in fire if f.suffix == ".jpg"), src / "other.jpg")
    before = _digest(src)
    r = cli(["infer", fire_models["int8"], src, "--save", src, "--json"])  # into the source folder itself: refused
    assert r.exit_code == 2 and f"--save {src} is inside the source folder" in r.stderr and f"--save {src}-annotated" in r.stderr
    assert _digest(src) == before
    out = tmp_path / "pics-annotated"
    r = cli(["infer", fire_models["int8"], src, "--save", out, "--json"])
    assert r.exit_code == 0, r.stderr
    assert _digest(src) == before  # every input byte-identical, nothing added
    assert sorted(_digest(out)) == ["a/img.jpg", "b/img.jpg", "img.jpg", "other.jpg", "predictions.jsonl"]  # a/ and b/ kept apart
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    r = cli(["infer", fire_models["int8"], src / "img.jpg", "--save", afile])
    assert r.exit_code == 2 and f"--save {afile} is a file, not a folder" in r.stderr and afile.read_text() == "keep me"


def test_deploy_validates_everything_before_touching_a_host(cli, sshd, deploy_args, converted_digits, tmp_path):
    model = next(Path(m["path"]) for m in converted_digits["modes"] if m["mode"] == "int8")
    for keep in ("0", "-1"):
        r = cli(["deploy", "pi@127.0.0.1:9", model, *deploy_args, "--keep", keep])
        assert r.exit_code == 2 and f"--keep {keep} would delete every earlier release" in r.stderr
    good = sshd("good")
    inv = tmp_path / "inv.yml"
    inv.write_text(f"hosts:\n  good: {{address: 127.0.0.1, port: {good.port}}}\n  bad: {{address: 127.0.0.1, port: 99999}}\n")
    r = cli(["deploy", "--inventory", inv, model, *deploy_args, "--trust-new-host", "--json"])
    assert r.exit_code == 1 and "host 'bad' has port 99999, not a TCP port" in r.stderr and r.stdout == ""
    assert not (tmp_path / "device" / "mltool" / "models").exists()  # the good host was not touched
    r = cli(["deploy", "pi@127.0.0.1:70000", model, *deploy_args])
    assert r.exit_code == 2 and "has port 70000, which is not a TCP port" in r.stderr
    r = cli(["deploy", "a", "b", model, *deploy_args, "--batch", "1,150%"])
    assert r.exit_code == 2 and "has 150%, not a percentage of the hosts" in r.stderr


# --------------------------------------------------------------------------- no traceback, anywhere


def test_read_only_folders_fail_at_once_with_one_line(digits_run, converted_digits, tmp_path):
    ro = Path(tempfile.mkdtemp(prefix="mltool-ro-"))
    try:
        os.chown(ro, 65534, 65534)
        os.chmod(ro, 0o555)
        model = next(m["path"] for m in converted_digits["modes"] if m["mode"] == "int8")
        img = tmp_path / "d.png"
        Image.new("L", (8, 8), 100).save(img)
        cases = {
            "convert": (["convert", digits_run, "-q", "dynamic", "--out", ro / "out"], "--out"),
            "train": (["train", "digits", "--epochs", "1", "--project", ro / "runs"], "--project"),
            "infer": (["infer", model, img, "--save", ro / "saved"], "--save"),
        }
        for name, (args, option) in cases.items():
            t0 = time.monotonic()
            proc = _mltool(*args, prefix=NO_DAC)
            assert proc.returncode == 1, (name, proc.stderr)
            assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {option} {ro}") and "permission denied" in proc.stderr
            assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60
        locked = tmp_path / "locked.png"
        Image.new("L", (8, 8), 100).save(locked)
        os.chown(locked, 65534, 65534)
        os.chmod(locked, 0o000)
        proc = _mltool("infer", model, locked, prefix=NO_DAC)
        assert proc.returncode == 1 and f"cannot read image {locked} (permission denied)" in proc.stderr
    finally:
        os.chmod(ro, 0o755)
        shutil.rmtree(ro, ignore_errors=True)


def test_bad_images_are_skipped_in_a_directory_run(cli, fire_models, synth_fire_dir, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(next((synth_fire_dir / "fire").glob("*.png")), d / "good.png")
    Image.new("1", (12000, 12000)).save(d / "bomb.png")  # 144 MP of nothing: a tiny file
    (d / "zero.png").write_bytes(b"")
    r = cli(["infer", fire_models["int8"], d, "--json"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    assert [o["name"] for o in out if "predictions" in o] == [str(d / "good.png")]
    errors = {Path(o["name"]).name: o["message"] for o in out if o.get("event") == "error"}
    assert "12000x12000 (144 MP), more than mltool decodes (40 MP)" in errors["bomb.png"]
    assert "cannot read image" in errors["zero.png"] and out[-1]["errors"] == 2 and out[-1]["frames"] == 1


def test_images_are_read_as_a_viewer_shows_them(tmp_path):
    from mltool.data.images import decode_image

    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = 255  # left half white
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    shown = decode_image(tmp_path / "rot.jpg")
    assert shown.shape == (60, 40, 3) and shown[:25].mean() > 200 and shown[35:].mean() < 50
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "w16.png")
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "g16.png")
    assert decode_image(tmp_path / "w16.png").min() == 255 and abs(int(decode_image(tmp_path / "g16.png")[0, 0, 0]) - 128) <= 1
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tiff")
    assert abs(int(decode_image(tmp_path / "f.tiff")[0, 0, 0]) - 128) <= 1


def test_wrong_answers_become_errors(cli, fire_models, ecg_model, foreign_models, synth_fire_dir, tmp_path):
    img = next((synth_fire_dir / "fire").glob("*.png"))
    for flags, text in ((["--std", "0"], "--std [0.0] contains zero"), (["--mean", "nan", "--std", "1"], "is not finite"),
                        (["--mean", "1,2", "--std", "1"], "--mean has 2 values but the model input has 3 channel(s)"),
                        (["--alert-threshold", "0.5", "--alert-class", "99"], "--alert-class 99 is out of range"),
                        (["--threads", "0"], "--threads")):
        r = cli(["infer", fire_models["int8"], img, *flags])
        assert r.exit_code == 2 and text in r.stderr, (flags, r.stderr)
    r = cli(["infer", foreign_models["two"], img])
    assert r.exit_code == 2 and "has 2 inputs" in r.stderr and "mltool feeds models with one input" in r.stderr
    odd = tmp_path / "shot[1].png"  # an existing file whose name looks like a glob
    shutil.copy(img, odd)
    r = cli(["infer", fire_models["int8"], odd, "--json"])
    assert r.exit_code == 0 and _lines(r.stdout)[0]["name"] == str(odd)
    from typer.testing import CliRunner

    from mltool.cli import app

    runner = CliRunner(env={"COLUMNS": "100"})
    r = runner.invoke(app, ["infer", str(ecg_model), "-", "--json"], input="0.1\n0.2\nnan\n")
    assert r.exit_code == 1 and "stdin line 3 holds a NaN or infinite value" in r.stderr
    r = runner.invoke(app, ["infer", str(ecg_model), "-", "--json"], input="0.1\n" * 100)
    assert r.exit_code == 1 and "only 100 samples arrived, fewer than one window of 3600 (10 s at 360 Hz)" in r.stderr
    for flags, text in ((["--hop", "0"], "--hop 0 must be at least 1"), (["--stall-timeout", "-1"], "--stall-timeout -1 must be positive")):
        r = cli(["infer", ecg_model, "-", *flags])
        assert r.exit_code == 2 and text in r.stderr
    r = cli(["bench", fire_models["int8"], "--runs", "5", "--seconds", "1"])
    assert r.exit_code == 2 and "--runs and --seconds both set" in r.stderr


def test_messages_point_the_right_way(cli, fire_models, tmp_path):
    r = cli(["inspect", tmp_path])
    assert r.exit_code == 1 and f"{tmp_path} is a directory, not a model file" in r.stderr
    r = cli(["inspect", "/dev/zero"])
    assert r.exit_code == 1 and "/dev/zero is not a regular file" in r.stderr
    trunc = tmp_path / "t.wav"
    with wave.open(str(trunc), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(360), w.writeframes(np.zeros(5000, np.int16).tobytes())
    trunc.write_bytes(trunc.read_bytes()[:30])
    (tmp_path / "zero.wav").write_bytes(b"")
    from mltool.errors import DataError
    from mltool.runtime.sources.signals import read_wav

    for f in (trunc, tmp_path / "zero.wav"):
        with pytest.raises(DataError) as e:
            read_wav(f)
        assert "()" not in e.value.one_line() and f"cannot read WAV file {f} (" in e.value.one_line()


def test_damaged_metadata_is_said(cli, fire_models, tmp_path):
    from mltool._tf import import_tensorflow

    import_tensorflow()
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(fire_models["int8"].read_bytes()), 0)
    entry = next(m for m in model.metadata if m.name in (b"mltool", "mltool"))
    model.buffers[entry.buffer].data = np.frombuffer(b'{"format": "mltool.tflite/1", "labels": 5, "input": {}}', np.uint8)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    bad = tmp_path / "damaged_meta.tflite"
    bad.write_bytes(bytes(b.Output()))
    rep = cli(["inspect", bad, "--json"]).json()
    assert rep["mltool_metadata"] is None and "the embedded mltool metadata is damaged and was ignored" in rep["problems"][0]


# --------------------------------------------------------------------------- signals, files, cosmetics


@pytest.mark.parametrize("phase", ["load", "import", "fit", "epoch", "evaluate", "save", "plot", "finish"])
def test_sigterm_during_train_leaves_no_partial_folder(tmp_path, phase):
    """A real SIGTERM, sent while the run is held at a known phase (MLTOOL_TEST_PAUSE_AT), ends it like
    Ctrl-C: exit 130, 'interrupted', and nothing left in --project (no .partial folder, no run)."""
    env = {**os.environ, "MLTOOL_TEST_PAUSE_AT": phase}
    proc = subprocess.Popen([sys.executable, "-m", "mltool", "train", "digits", "--epochs", "3", "--patience", "0",
                             "--project", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == f"paused at {phase}":
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"the run never reached phase {phase}: {''.join(seen)[-500:]}")
    if phase not in ("load", "import"):
        assert list(tmp_path.glob(".partial-*")), "the run folder should exist at this phase"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 130, (proc.returncode, err[-500:])
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    print(f"SIGTERM at {phase}: exit 130 after {took:.2f} s")


def test_files_get_the_normal_umask_and_convert_json_keeps_earlier_modes(cli, digits_run, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "conv"
        r = cli(["convert", digits_run, "-q", "dynamic", "--out", out])
        assert r.exit_code == 0, r.stderr
        r = cli(["convert", digits_run, "-q", "float16", "--out", out])
        assert r.exit_code == 0 and "keeping the earlier results for dynamic" in r.stderr
        report = json.loads((out / "convert.json").read_text())
        assert [m["mode"] for m in report["modes"]] == ["dynamic", "float16"]
        assert (out / "model_float16.tflite").stat().st_mode & 0o777 == 0o644
        r = cli(["train", "digits", "--epochs", "1", "--max-samples", "200", "--project", tmp_path / "runs", "--json"])
        run = Path(r.json()["run_dir"])
        assert run.stat().st_mode & 0o777 == 0o755 and (run / "mltool.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_same_file_names_are_told_apart_in_bench(cli, fire_models):
    r = cli(["bench", fire_models["int8"], fire_models["uint8"], "--runs", "5"])
    assert r.exit_code == 0
    assert f"{fire_models['int8'].parent.name}/model_int8.tflite" in r.stderr
    assert f"{fire_models['uint8'].parent.name}/model_int8.tflite" in r.stderr


def test_class_folders_training_cannot_describe(cli, synth_fire_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_fire_dir / "fire", data / "fire")
    (data / "bad\nname").mkdir()
    shutil.copy(next((synth_fire_dir / "no_fire").glob("*.png")), data / "bad\nname" / "x.png")
    r = cli(["train", "images", data, "--epochs", "1", "--project", tmp_path / "runs"])
    assert r.exit_code == 1 and "has a line break, control character or edge space in its name" in r.stderr
    shutil.rmtree(data / "bad\nname")
    (data / "rare").mkdir()
    shutil.copy(next((synth_fire_dir / "no_fire").glob("*.png")), data / "rare" / "only.png")  # one sample: none left to test
    r = cli(["train", "images", data, "--epochs", "1", "--project", tmp_path / "runs", "--json"])
    assert r.exit_code == 0, r.stderr
    assert "the test split has no samples of rare" in r.stderr
    info = json.loads((Path(r.json()["run_dir"]) / "mltool.json").read_text())
    assert info["metrics"]["classes_missing_from_test"] == ["rare"]
