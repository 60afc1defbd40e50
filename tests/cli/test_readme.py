"""The README is a path people follow as written: its first-result block runs here exactly as
printed, and every other `mltool` command in it parses against the real CLI (options that drift
or vanish fail here, not in a user's terminal)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def blocks(text: str) -> list[tuple[str, str]]:
    """(heading above, code) for every fenced block."""
    out = []
    heading = ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```[^\n]*\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1)
        else:
            out.append((heading, m.group(2)))
    return out


def commands(code: str) -> list[list[str]]:
    """The `mltool ...` command lines of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("mltool "):
            out.append(shlex.split(line, comments=True))
    return out


def test_readme_opens_with_the_two_commands_and_stays_short():
    first = blocks(README)[0][1].splitlines()
    assert [ln.split("#")[0].strip() for ln in first] == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
    assert (REPO / ".ci" / "run").read_text().strip().endswith("exec bash scripts/test.sh")
    assert len(README.encode()) < 15_000
    for link in re.findall(r"\]\((docs/[^)#]+)\)", README):
        assert (REPO / link).is_file(), link


def test_every_mltool_command_in_the_readme_parses():
    import typer

    from mltool.cli import app, normalize_optional_values

    root = typer.main.get_command(app)
    ctx = type(root.make_context("mltool", ["doctor"]))(root, info_name="mltool")
    checked = 0
    for heading, code in blocks(README):
        for argv in commands(code):
            args = normalize_optional_values(argv[1:])
            name, cmd, rest = args[0], root.get_command(ctx, args[0]), args[1:]
            assert cmd is not None, f"README ({heading}): no command `{name}`"
            while hasattr(cmd, "get_command"):  # a group (datasets)
                name, cmd, rest = rest[0], cmd.get_command(ctx, rest[0]), rest[1:]
                assert cmd is not None, f"README ({heading}): no command `{shlex.join(argv)}`"
            try:
                cmd.make_context(name, list(rest), parent=ctx)
            except Exception as exc:  # a usage error: an option that does not exist or a bad value
                pytest.fail(f"README ({heading}): `{shlex.join(argv)}` does not parse: {exc}")
            checked += 1
    assert checked >= 12


def test_the_first_result_block_runs_as_written(tmp_path):
    code = next(c for h, c in blocks(README) if h.startswith("## Your first result"))
    env = {**os.environ, "COLUMNS": "100"}
    outputs = []
    for argv in commands(code):
        proc = subprocess.run([sys.executable, "-m", "mltool", *argv[1:], *(["--json"] if argv[1] == "infer" else [])],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"`{shlex.join(argv)}` failed: {proc.stderr[-2000:]}"
        outputs.append(proc)
    results = [json.loads(ln) for ln in outputs[-1].stdout.splitlines() if '"predictions"' in ln]
    right = sum(r["name"].rsplit("_", 1)[1].split(".")[0] == r["predictions"][0]["label"] for r in results)
    assert len(results) == 8 and right >= 7, results
    assert (tmp_path / "runs" / "train" / "digits-1" / "mistakes.png").is_file()
    assert "next: mltool convert runs/train/digits-1 --quantize int8" in outputs[0].stderr
