"""Release operations that run ON THE DEVICE (sent as source over SSH, stdlib only).

The paths come in the arguments, from :class:`mltool.deploy.layout.DeviceLayout` (which
describes the layout): ``base`` (one model), ``releases``, ``current`` (a symlink switched with
rename(2)), ``models`` (all models) and ``python`` (the device venv's interpreter).

Usage: python3 -c SOURCE OP JSON_ARGS  -> prints one JSON object.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dirs(a):
    return tuple(os.path.expanduser(a[k]) for k in ("base", "releases", "current"))


def _current(cur):
    try:
        return os.path.basename(os.readlink(cur).rstrip("/"))
    except OSError:
        return None


def _releases(rel):
    out = []
    if not os.path.isdir(rel):
        return out
    for rid in os.listdir(rel):
        d = os.path.join(rel, rid)
        if rid.startswith(".") or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, "release.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            continue  # not a complete release
        out.append(info)
    out.sort(key=lambda r: r.get("deployed_at", 0))
    return out


def op_state(a):
    base, rel, cur = _dirs(a)
    stale = [d for d in os.listdir(rel) if d.startswith(".tmp-")] if os.path.isdir(rel) else []
    return {"releases": _releases(rel), "current": _current(cur), "stale": stale, "base": base}


def op_names(a):
    models = os.path.expanduser(a["models"])
    names = sorted(n for n in os.listdir(models) if os.path.isdir(os.path.join(models, n))) if os.path.isdir(models) else []
    return {"names": names, "models": models}


def _proc_start(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _session_owner():
    """'pid:starttime' of the sshd process serving this SSH connection: it lives exactly as long
    as the deploying client's connection, so an upload whose owner is gone is stale."""
    pid = os.getppid()
    for _ in range(8):
        try:
            with open("/proc/%d/comm" % pid) as fh:
                comm = fh.read().strip()
            with open("/proc/%d/stat" % pid) as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if comm.startswith("sshd"):
            return "%d:%s" % (pid, _proc_start(pid))
        pid = ppid
    return None


def _stale(tmp_dir):
    try:
        with open(os.path.join(tmp_dir, ".owner")) as fh:
            owner = fh.read().strip()
    except OSError:
        owner = ""
    if owner and ":" in owner and os.path.isdir("/proc"):
        pid, start = owner.split(":", 1)
        return _proc_start(int(pid)) != start
    return time.time() - os.path.getmtime(tmp_dir) > 3600  # no /proc: fall back to age


def op_prepare(a):
    """Remove stale uploads (their SSH session is gone); report whether this content is already
    here; make an upload dir owned by this session."""
    base, rel, cur = _dirs(a)
    os.makedirs(rel, exist_ok=True)
    removed = []
    for d in os.listdir(rel):
        if d.startswith(".tmp-") and _stale(os.path.join(rel, d)):
            shutil.rmtree(os.path.join(rel, d), ignore_errors=True)
            removed.append(d)
    target = os.path.join(rel, a["id"])
    present = False
    if os.path.isdir(target):
        f = os.path.join(target, "model.tflite")
        if os.path.isfile(f) and _sha256(f) == a["sha256"] and os.path.isfile(os.path.join(target, "release.json")):
            present = True
        else:  # damaged release with this id: replace it
            shutil.rmtree(target, ignore_errors=True)
    tmp = None if present else tempfile.mkdtemp(prefix=".tmp-", dir=rel)
    if tmp:
        with open(os.path.join(tmp, ".owner"), "w") as fh:
            fh.write(_session_owner() or "")
    return {"present": present, "tmp": tmp, "removed_stale": removed, "current": _current(cur),
            "free_bytes": shutil.disk_usage(rel).free}


def op_commit(a):
    """Verify the uploaded file, then move the upload dir into releases/<id> in one rename."""
    base, rel, cur = _dirs(a)
    part = os.path.join(a["tmp"], "model.tflite.part")
    got = _sha256(part)
    if got != a["sha256"]:
        shutil.rmtree(a["tmp"], ignore_errors=True)
        raise SystemExit("SHA-256 mismatch after upload: expected %s, got %s" % (a["sha256"], got))
    os.rename(part, os.path.join(a["tmp"], "model.tflite"))
    info = dict(a["manifest"], deployed_at=time.time())
    with open(os.path.join(a["tmp"], "release.json"), "w") as fh:
        json.dump(info, fh)
    os.remove(os.path.join(a["tmp"], ".owner"))
    try:
        os.rename(a["tmp"], os.path.join(rel, a["id"]))
    except OSError:
        # A concurrent deploy of the same content got there first: same bytes, keep theirs.
        done = os.path.join(rel, a["id"], "model.tflite")
        if not (os.path.isfile(done) and _sha256(done) == a["sha256"]):
            raise
        shutil.rmtree(a["tmp"], ignore_errors=True)
    return {"release": a["id"]}


def op_switch(a):
    """Point current at releases/<id> atomically (symlink to a temp name, then rename over)."""
    base, rel, cur = _dirs(a)
    if not os.path.isfile(os.path.join(rel, a["id"], "model.tflite")):
        raise SystemExit("no release %s for %s" % (a["id"], a["name"]))
    previous = _current(cur)
    tmp = os.path.join(base, ".current-%d" % os.getpid())
    os.symlink(os.path.join("releases", a["id"]), tmp)
    os.replace(tmp, cur)
    return {"current": a["id"], "previous": previous}


def op_prune(a):
    base, rel, cur = _dirs(a)
    current = _current(cur)
    rels = [r for r in _releases(rel) if r["id"] != current]
    keep_others = max(0, a["keep"] - (1 if current else 0))
    doomed = rels[: max(0, len(rels) - keep_others)]
    for r in doomed:
        shutil.rmtree(os.path.join(rel, r["id"]), ignore_errors=True)
    return {"pruned": [r["id"] for r in doomed]}


def op_finish(a):
    """After the upload, in one round trip: verify + commit (if uploaded), probe with the
    device's best Python, switch current atomically, prune. A failed probe discards the new
    release and leaves current alone."""
    import subprocess

    base, rel, cur = _dirs(a)
    committed = False
    if a.get("tmp"):
        op_commit(a)
        committed = True
    current = _current(cur)
    if current == a["id"]:
        return {"status": "unchanged", "current": current}
    probe = None
    if a.get("probe_source"):
        venv_py = os.path.expanduser(a["python"])
        py = venv_py if os.access(venv_py, os.X_OK) else sys.executable
        model = os.path.join(rel, a["id"], "model.tflite")
        try:
            p = subprocess.run([py, "-c", a["probe_source"], model], capture_output=True, text=True, timeout=a.get("probe_timeout", 120))
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired:
            rc, out, err = -1, "", "probe timed out after %ss" % a.get("probe_timeout", 120)
        if rc != 0:
            if committed:
                shutil.rmtree(os.path.join(rel, a["id"]), ignore_errors=True)
            if rc < 0:
                import signal

                message = ("the device's TFLite runtime crashed (%s) running the model; pin another runtime with "
                           "`mltool deploy HOST --setup --runtime 'ai-edge-litert==2.1.6'`" % signal.Signals(-rc).name)
            else:
                message = (err.strip() or out.strip() or "exit %d" % rc).splitlines()[-1]
            return {"status": "probe_failed", "message": message, "current": current}
        probe = json.loads(out.strip().splitlines()[-1])
    sw = op_switch(a)
    pruned = op_prune(a)["pruned"]
    return {"status": "changed", "current": a["id"], "previous": sw["previous"], "probe": probe, "pruned": pruned}


OPS = {"finish": op_finish, "state": op_state, "names": op_names, "prepare": op_prepare, "switch": op_switch}

if __name__ == "__main__":
    print(json.dumps(OPS[sys.argv[1]](json.loads(sys.argv[2]))))
