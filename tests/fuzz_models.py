"""Fuzzing `mltool inspect` and `mltool infer` with mutated models.

``python -m tests.fuzz_models MODEL IMAGE N SEED OUTDIR`` mutates MODEL N times and runs
`inspect`, then `infer` on IMAGE, against each mutant. mltool is imported once; each mutant runs
in a forked child (a real separate process) with an address-space limit and a timeout, so a
crash, a hang or a runaway allocation is caught and classified instead of taking the harness
down. Prints one JSON object: the table (success, clean error, traceback, signal, hang), the
peak child memory, and the mutants that misbehaved.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import struct
import sys
import time
from pathlib import Path

TIMEOUT_S = 20.0
MEMORY_LIMIT = 3 << 30  # address space; a normal infer child uses well under half of it


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant: the kinds of damage a flaky copy, a bad tool or an attacker produces."""
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "int32", "int32", "shape", "truncate", "splice", "zero", "insert"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "int32":  # an offset, a length, an index or a dimension gone wrong
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(0, len(b) - 4) & ~3
            b[pos:pos + 4] = struct.pack("<i", rng.choice([-1, 0, 1, 2**31 - 1, -(2**31), rng.randrange(-2**31, 2**31)]))
    elif kind == "shape":  # a small int32 (likely a tensor dimension) made huge
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(0, len(b) - 4) & ~3
            if 1 <= struct.unpack_from("<i", b, pos)[0] <= 4096:
                b[pos:pos + 4] = struct.pack("<i", rng.choice([65536, 1 << 20, 1 << 28, 2**31 - 1]))
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)):]
    elif kind == "splice":
        a, c = sorted(rng.randrange(len(b)) for _ in range(2))
        d = rng.randrange(len(b))
        b[d:d] = b[a:c]
    elif kind == "zero":
        a = rng.randrange(len(b))
        b[a:a + rng.randint(1, 256)] = bytes(min(256, len(b) - a))
    else:
        pos = rng.randrange(len(b))
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return kind, bytes(b)


def _child(model: str, image: str, out_dir: Path) -> None:
    """In the forked child: run both commands as the CLI would, output to files, and exit."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    from mltool.cli import main

    codes = []
    for i, args in enumerate((["inspect", model, "--json"], ["infer", model, image, "--json", "--max-frames", "1"])):
        out = os.open(out_dir / f"{i}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(out_dir / f"{i}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out, 1), os.dup2(err, 2)
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - an escaped exception is what we are looking for
            import traceback

            traceback.print_exc()
            code = 99
        sys.stdout.flush(), sys.stderr.flush()
        codes.append(code)
    (out_dir / "codes").write_text(json.dumps(codes))
    os._exit(0)


def _warm_up(model: Path, image: Path, out: Path) -> None:
    """Run both commands once here, so that every forked child starts warm (commands built,
    caches filled) and the fuzzing time goes to the mutants."""
    from mltool.cli import main

    out.mkdir(parents=True, exist_ok=True)
    saved = os.dup(1), os.dup(2)
    sink = os.open(out / "warm-up.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(sink, 1), os.dup2(sink, 2)
    try:
        for args in (["inspect", str(model), "--json"], ["infer", str(model), str(image), "--json", "--max-frames", "1"]):
            try:
                main(args)
            except SystemExit:
                pass
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(sink)


def classify(code: int, err: str) -> str:
    if "Traceback" in err or code not in (0, 1, 2):
        return "traceback"
    if code == 0:
        return "success"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    return "clean error" if len(errors) == 1 and lines[-1].startswith("Error: ") else "traceback"


def run(model: Path, image: Path, n: int, seed: int, out: Path, jobs: int = os.cpu_count() or 2) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import cv2  # noqa: F401 - load everything once, before forking: children only run
    import rich.console  # noqa: F401
    import rich.markup  # noqa: F401
    import rich.table  # noqa: F401
    from PIL import Image  # noqa: F401

    import mltool.cli  # noqa: F401
    import mltool.cli.infer  # noqa: F401
    import mltool.cli.inspect  # noqa: F401
    import mltool.data.images  # noqa: F401
    import mltool.runtime.draw  # noqa: F401
    import mltool.runtime.infer  # noqa: F401
    import mltool.runtime.inspect  # noqa: F401
    from mltool.runtime.interpreter import find_runtime

    find_runtime()
    cv2.setNumThreads(1)
    _warm_up(model, image, out)
    rng = random.Random(seed)
    data = model.read_bytes()
    table = {cmd: {"success": 0, "clean error": 0, "traceback": 0, "signal": 0, "hang": 0} for cmd in ("inspect", "infer")}
    bad: list[dict] = []
    peak_kib = 0
    running: dict[int, tuple[int, str, Path, float]] = {}  # pid -> (mutant, kind, dir, started)

    def reap(pid: int, status: int, usage: resource.struct_rusage | None) -> None:
        nonlocal peak_kib
        i, kind, d, _ = running.pop(pid)
        if usage is not None:
            peak_kib = max(peak_kib, usage.ru_maxrss)
        codes = json.loads((d / "codes").read_text()) if (d / "codes").exists() else []
        for ci, cmd in enumerate(("inspect", "infer")):
            if status == -1:
                verdict = "hang"
            elif os.WIFSIGNALED(status) or ci >= len(codes):
                verdict = "signal"
            else:
                verdict = classify(codes[ci], (d / f"{ci}.err").read_text(errors="replace"))
            table[cmd][verdict] += 1
            if verdict in ("traceback", "signal", "hang"):
                err = d / f"{ci}.err"
                bad.append({"mutant": i, "kind": kind, "command": cmd, "verdict": verdict, "file": str(d / "model.tflite"),
                            "stderr": err.read_text(errors="replace")[-600:] if err.exists() else ""})
        if not any(x["mutant"] == i for x in bad):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()

    def wait_some(block: bool) -> None:
        while running:
            for pid, (_, _, _, started) in list(running.items()):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    reap(pid, status, usage)
                elif time.monotonic() - started > TIMEOUT_S:
                    os.kill(pid, signal.SIGKILL)
                    _, _, usage = os.wait4(pid, 0)
                    reap(pid, -1, usage)
            if not block or len(running) < jobs:
                return
            time.sleep(0.003)

    for i in range(n):
        kind, mutant = mutate(data, rng)
        d = out / f"m{i:05d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.tflite").write_bytes(mutant)
        pid = os.fork()
        if pid == 0:
            try:
                _child(str(d / "model.tflite"), str(image), d)
            finally:
                os._exit(98)
        running[pid] = (i, kind, d, time.monotonic())
        wait_some(block=True)
    while running:
        wait_some(block=False)
        time.sleep(0.003)
    return {"mutants": n, "seed": seed, "model": str(model), "table": table, "peak_rss_mib": round(peak_kib / 1024, 1),
            "misbehaved": bad[:20]}


if __name__ == "__main__":
    model_arg, image_arg, n_arg, seed_arg, out_arg = sys.argv[1:6]
    print(json.dumps(run(Path(model_arg), Path(image_arg), int(n_arg), int(seed_arg), Path(out_arg))))
