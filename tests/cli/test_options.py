"""One vocabulary over every command's options (docs/cli.md): every option written down there with
one meaning, a short flag standing for one meaning, the same option spelt the same way (and with
the same short flag) in every command, no Python types in help, and renamed options still working."""

from __future__ import annotations

import fnmatch
import re

import pytest
import typer

from mltool.cli import RENAMED, app
from tests.conftest import REPO

DOC = (REPO / "docs" / "cli.md").read_text()


def _table(after: str) -> list[list[str]]:
    block = DOC[DOC.index(after):]
    rows = []
    for line in block.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[1:]  # the rule under the header


def _options() -> dict[str, list[tuple[str, object]]]:
    """long option name -> [(command, click parameter)] for every command and subcommand."""
    root = typer.main.get_command(app)
    ctx = type(root.make_context("mltool", ["doctor"]))(root, info_name="mltool")
    out: dict[str, list[tuple[str, object]]] = {}

    def walk(path: list[str], cmd: object) -> None:
        if hasattr(cmd, "list_commands"):
            for n in cmd.list_commands(ctx):
                walk(path + [n], cmd.get_command(ctx, n))
            return
        for p in cmd.params:
            if p.param_type_name == "option":
                out.setdefault(next(o for o in p.opts + p.secondary_opts if o.startswith("--")), []).append((" ".join(path), p))

    walk([], root)
    return out


OPTIONS = _options()


def test_every_option_is_written_down_with_one_meaning():
    documented = []
    for row in _table("| option | meaning |"):
        documented += re.findall(r"`(--[a-z0-9*-]+)`", row[0])
    missing = [o for o in OPTIONS if not any(fnmatch.fnmatch(o, d) for d in documented)]
    assert not missing, f"options not in docs/cli.md's vocabulary: {missing}"
    stale = [d for d in documented if not any(fnmatch.fnmatch(o, d) for o in OPTIONS)]
    assert not stale, f"docs/cli.md lists options no command has: {stale}"


def test_a_short_flag_stands_for_one_meaning_and_an_option_has_one_short_flag():
    allowed = {row[0].strip("`"): set(re.findall(r"`(--[a-z0-9-]+)`", row[2])) for row in _table("| flag | means | options |")}
    for long, uses in OPTIONS.items():
        shorts = {tuple(o for o in p.opts if len(o) == 2) for _, p in uses}
        assert len(shorts) == 1, f"{long} has different short flags in {[c for c, _ in uses]}: {shorts}"
        for short in shorts.pop():
            assert short in allowed, f"{short} ({long}) is not in docs/cli.md's short flags"
            assert long in allowed[short], f"{short} stands for {long}, which docs/cli.md does not give it"


def test_help_shows_no_python_types():
    from mltool.cli import _build

    for name in ("train", "convert", "infer", "bench", "serve", "deploy", "agent", "export"):
        cmd = _build(name)
        text = cmd.get_help(typer._click.Context(cmd, info_name=name))
        assert not re.search(r"<(int|float|str|path|list|Path)[^>]*>", text), (name, re.findall(r"<[^>]+>", text))


@pytest.mark.parametrize("command,old,new", [(c, o, n) for c, m in RENAMED.items() for o, n in m.items()])
def test_renamed_options_exist_and_their_old_names_still_work(command, old, new):
    assert new in OPTIONS and any(c.split()[0] == command for c, _ in OPTIONS[new]), (command, new)
    assert not any(c.split()[0] == command for c, _ in OPTIONS.get(old, [])), f"{command} still has {old} itself"
    assert f"`{old}` | " in DOC and f"`{new}`" in DOC


def test_an_old_option_name_is_translated_with_a_note(cli, digits_int8, tmp_path):
    from mltool.data.tasks import write_samples

    folder = write_samples("digits", tmp_path / "s", 2)[0].parent
    r = cli(["infer", digits_int8, folder, "--timeout", "3", "--json"])
    assert r.exit_code == 0, r.stderr
    assert "note: --timeout is now --stall-timeout (the old name still works)" in r.stderr
