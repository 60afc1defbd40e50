"""One output contract for every command: stdout carries data only (JSON with --json, nothing
without it); the human rendering goes to stderr either way, the same with and without --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


def _json_docs(stdout: str) -> list:
    """stdout as one JSON document, or as JSON lines (infer)."""
    try:
        return [json.loads(stdout)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _check(cli, args: list, marker: str, json_args: list | None = None) -> list:
    """Run ``args`` plain, then ``json_args`` (default: the same) with --json."""
    plain = cli(args)
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout == "", f"{args[0]} wrote to stdout without --json: {plain.stdout[:200]!r}"
    assert marker in plain.stderr
    js = cli([*(json_args or args), "--json"])
    assert js.exit_code == 0, js.stderr
    docs = _json_docs(js.stdout)
    assert docs, f"{args[0]} --json printed no JSON"
    assert marker in js.stderr, f"{args[0]} --json dropped its human output"
    return docs


@pytest.fixture(scope="module")
def digit_image(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("digit")
    Image.new("L", (8, 8), 120).save(d / "x.png")
    return d / "x.png"


@pytest.fixture(scope="module")
def int8_model(converted_digits) -> Path:
    return next(Path(m["path"]) for m in converted_digits["modes"] if m["mode"] == "int8")


def test_train(cli, tmp_path):
    docs = _check(cli, ["train", "digits", "--epochs", "1", "--max-samples", "200", "--project", tmp_path], "test accuracy")
    assert docs[0]["task"] == "digits" and Path(docs[0]["run_dir"]).is_dir()


def test_evaluate(cli, digits_run):
    assert _check(cli, ["evaluate", digits_run], "test accuracy")[0]["split"] == "test"


def test_convert(cli, digits_run, tmp_path):
    docs = _check(cli, ["convert", digits_run, "-q", "dynamic", "--out", tmp_path], "wrote")
    assert docs[0]["modes"][0]["mode"] == "dynamic"


def test_inspect(cli, int8_model):
    assert _check(cli, ["inspect", int8_model], "signatures:")[0]["inputs"][0]["dtype"] == "int8"


def test_infer(cli, int8_model, digit_image):
    docs = _check(cli, ["infer", int8_model, digit_image], "1 results")
    assert "predictions" in docs[0] and docs[-1]["event"] == "summary"


def test_bench(cli, int8_model):
    assert _check(cli, ["bench", int8_model, "--runs", "5"], "timed runs")[0]["rows"][0]["runs"] == 5


def test_doctor(cli):
    assert "checks" in _check(cli, ["doctor", "--no-camera-probe"], "doctor")[0]


def test_datasets(cli, tmp_path):
    assert {r["name"] for r in _check(cli, ["datasets", "list"], "datasets")[0]} >= {"digits", "fire"}
    synth = ["datasets", "synth", "fire", tmp_path / "a", "-n", "2"]
    docs = _check(cli, synth, "SYNTHETIC", json_args=[*synth[:3], tmp_path / "b", *synth[4:]])
    assert docs[0]["synthetic"] is True


def test_deploy_releases_rollback(cli, sshd, deploy_args, converted_digits):
    server = sshd()
    modes = {m["mode"]: Path(m["path"]) for m in converted_digits["modes"]}
    base = [*deploy_args, "--trust-new-host"]
    docs = _check(cli, ["deploy", server.target, modes["int8"], *base], "changed")  # second run: unchanged
    assert docs[0]["hosts"][0]["status"] == "unchanged"
    assert cli(["deploy", server.target, modes["dynamic"], *base]).exit_code == 0
    newest = _check(cli, ["releases", server.target, *base], "releases on")[0]["models"]["digits"]["current"]
    # each rollback switches once: back to the int8 release, then (with --json) forward again
    docs = _check(cli, ["rollback", server.target, *base], "current ->", json_args=["rollback", server.target, *base, "--to", newest])
    assert docs[0]["name"] == "digits" and docs[0]["current"] == newest
