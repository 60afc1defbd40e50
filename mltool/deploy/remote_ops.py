"""Release operations that run ON THE DEVICE (sent as source over SSH, stdlib only).

The paths come in the arguments, from :class:`mltool.layout.DeviceLayout` (which
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


def _lock(base, wait_s=None):
    """The model's lock (``base/.lock``, flock): one release step at a time per model, so two
    deploys of one model (or a deploy and a rollback) never prune or switch under each other.
    Held until the op's process exits. ``wait_s`` None waits as long as it takes."""
    import fcntl

    os.makedirs(base, exist_ok=True)
    fd = os.open(os.path.join(base, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def _check_current_link(cur):
    """``current`` must be the symlink mltool switches (or absent): a real directory or file
    there would make the switch fail half-way."""
    if os.path.lexists(cur) and not os.path.islink(cur):
        what = "a directory" if os.path.isdir(cur) else "a file"
        raise SystemExit("%s is %s, not the link mltool switches: move it away (mv %s %s.old) and deploy again"
                         % (cur, what, cur, cur))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    here; check there is room for it BEFORE anything is deleted; make an upload dir owned by
    this session. Nothing that exists is removed here: a damaged release (even the current one)
    is replaced only once its replacement has arrived, been verified and probed (op_finish)."""
    base, rel, cur = _dirs(a)
    _check_current_link(cur)
    os.makedirs(rel, exist_ok=True)
    _lock(base)
    removed = []
    for d in os.listdir(rel):
        if d.startswith(".tmp-") and _stale(os.path.join(rel, d)):
            shutil.rmtree(os.path.join(rel, d), ignore_errors=True)
            removed.append(d)
    for d in os.listdir(rel):  # releases made 0700 by earlier versions: readable by the service user too
        p = os.path.join(rel, d)
        if not d.startswith(".") and os.path.isdir(p) and not os.stat(p).st_mode & 0o055:
            os.chmod(p, 0o777 & ~_umask())
    for d in os.listdir(base):
        if d.startswith(".abandon-") and time.time() - os.path.getmtime(os.path.join(base, d)) > 86400:
            os.remove(os.path.join(base, d))
    target = os.path.join(rel, a["id"])
    present = damaged = False
    if os.path.isdir(target):
        f = os.path.join(target, "model.tflite")
        if os.path.isfile(f) and _sha256(f) == a["sha256"] and os.path.isfile(os.path.join(target, "release.json")):
            present = True
        else:
            damaged = True
    free = shutil.disk_usage(rel).free
    out = {"present": present, "damaged": damaged, "tmp": None, "removed_stale": removed, "current": _current(cur),
           "free_bytes": free}
    if not present:
        need = 2 * int(a.get("size", 0))
        if free < need:
            return dict(out, status="no_space", need_bytes=need)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=rel)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: a service user must read releases
        with open(os.path.join(tmp, ".owner"), "w") as fh:
            fh.write(_session_owner() or "")
        out["tmp"] = tmp
    return dict(out, status="ok")


def _verify_upload(a):
    """The uploaded file has the expected SHA-256: becomes tmp/model.tflite with its release.json
    (still outside releases/)."""
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


def _commit(a):
    """Move the verified, probed upload to releases/<id>. Returns "new", "same" (that content
    was already there) or "repaired" (a damaged release with this id had its files replaced,
    each with one rename, so a ``current`` pointing at it never dangles)."""
    base, rel, cur = _dirs(a)
    target = os.path.join(rel, a["id"])
    try:
        os.rename(a["tmp"], target)
        return "new"
    except OSError:
        if not os.path.isdir(target):
            raise
    done = os.path.join(target, "model.tflite")
    if os.path.isfile(done) and _sha256(done) == a["sha256"] and os.path.isfile(os.path.join(target, "release.json")):
        shutil.rmtree(a["tmp"], ignore_errors=True)
        return "same"
    os.replace(os.path.join(a["tmp"], "model.tflite"), done)
    os.replace(os.path.join(a["tmp"], "release.json"), os.path.join(target, "release.json"))
    shutil.rmtree(a["tmp"], ignore_errors=True)
    return "repaired"


def _switch(a):
    """Point current at releases/<id> atomically (symlink to a temp name, then rename over)."""
    base, rel, cur = _dirs(a)
    _check_current_link(cur)
    if not os.path.isfile(os.path.join(rel, a["id"], "model.tflite")):
        raise SystemExit("no release %s for %s (another deploy may have pruned it): deploy again" % (a["id"], a["name"]))
    previous = _current(cur)
    tmp = os.path.join(base, ".current-%d" % os.getpid())
    try:
        os.symlink(os.path.join("releases", a["id"]), tmp)
        os.replace(tmp, cur)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    return {"current": a["id"], "previous": previous}


def op_switch(a):
    """Rollback: switch current to an existing release (under the model's lock)."""
    _lock(_dirs(a)[0])
    return _switch(a)


def _prune(a):
    base, rel, cur = _dirs(a)
    current = _current(cur)
    rels = [r for r in _releases(rel) if r["id"] != current]
    keep_others = max(0, a["keep"] - (1 if current else 0))
    doomed = rels[: max(0, len(rels) - keep_others)]
    for r in doomed:
        shutil.rmtree(os.path.join(rel, r["id"]), ignore_errors=True)
    return {"pruned": [r["id"] for r in doomed]}


def _abandon_marker(a):
    return os.path.join(_dirs(a)[0], ".abandon-%s" % a.get("token", "none"))


def _probe(a, model, timeout):
    """Run the probe with the device's venv Python: (None, result) or (message, None)."""
    import signal
    import subprocess

    venv_py = os.path.expanduser(a["python"])
    py = venv_py if os.access(venv_py, os.X_OK) else sys.executable
    try:
        p = subprocess.run([py, "-c", a["probe_source"], model], capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return "the probe did not finish within %.0f s (the rest of --command-timeout)" % timeout, None
    except OSError as exc:
        return "cannot run %s (%s): repair the device's venv with `mltool deploy HOST --setup`" % (py, exc.strerror), None
    if rc < 0:
        return ("the device's TFLite runtime crashed (%s) running the model; pin another runtime with "
                "`mltool deploy HOST --setup --runtime 'ai-edge-litert==2.1.6'`" % signal.Signals(-rc).name), None
    if rc != 0:
        if not (err.strip() or out.strip()):
            return ("the device's Python %s exited %d without a message: repair its venv with "
                    "`mltool deploy HOST --setup`" % (py, rc)), None
        return (err.strip() or out.strip()).splitlines()[-1], None
    try:
        result = json.loads(out.strip().splitlines()[-1])
        if not isinstance(result, dict):
            raise ValueError(out)
    except (ValueError, IndexError):
        shown = (out.strip() or "nothing")[-120:]
        return ("the probe printed %r instead of its JSON result (is something in the device's Python startup "
                "printing?)" % shown), None
    return None, result


def op_finish(a):
    """After the upload, under the model's lock, in one round trip: verify the upload, probe it
    (still outside releases/), commit, switch current atomically, prune. A failed probe
    discards the upload and leaves releases/ and current alone.

    The client waits ``--command-timeout``; this op gives up before switching once
    ``budget_s`` (less than that) has passed, and never switches after the client has said
    it abandoned this deploy (op_abandon's marker): what the client reports is what happened."""
    t0 = time.monotonic()
    base, rel, cur = _dirs(a)
    budget = float(a.get("budget_s") or 1e9)
    _check_current_link(cur)
    _lock(base)
    tmp = a.get("tmp")

    def discard():
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    if os.path.exists(_abandon_marker(a)):  # the client gave up before this even started
        discard()
        return {"status": "timed_out", "current": _current(cur)}

    if tmp:
        _verify_upload(a)
        model = os.path.join(tmp, "model.tflite")
    else:
        model = os.path.join(rel, a["id"], "model.tflite")
        if not os.path.isfile(model):
            return {"status": "gone", "current": _current(cur),
                    "message": "another deploy pruned release %s while this one was starting" % a["id"]}
    current = _current(cur)
    if current == a["id"] and not tmp:
        return {"status": "unchanged", "current": current}
    probe = None
    if a.get("probe_source"):
        left = budget - (time.monotonic() - t0)
        message, probe = _probe(a, model, max(1.0, left))
        if message is not None:
            discard()
            return {"status": "probe_failed", "message": message, "current": current}
    if time.monotonic() - t0 > budget or os.path.exists(_abandon_marker(a)):
        discard()
        return {"status": "timed_out", "current": current}
    how = _commit(a) if tmp else "same"
    current = _current(cur)
    if current == a["id"]:  # a damaged current release was repaired, or a concurrent deploy switched first
        return {"status": "repaired" if how == "repaired" else "unchanged", "current": current, "probe": probe,
                "pruned": []}
    sw = _switch(a)
    pruned = _prune(a)["pruned"]
    return {"status": "changed", "current": a["id"], "previous": sw["previous"], "probe": probe, "pruned": pruned}


def op_abandon(a):
    """The client stopped waiting for op_finish: mark this deploy abandoned (op_finish will not
    switch after seeing it), wait for the model's lock (op_finish has ended), report current."""
    base, rel, cur = _dirs(a)
    marker = _abandon_marker(a)
    with open(marker, "w"):  # stays: op_finish may not have started yet (prepare removes old ones)
        pass
    fd = _lock(base, wait_s=float(a.get("wait_s", 30)))
    return {"current": _current(cur), "settled": fd is not None}


OPS = {"finish": op_finish, "state": op_state, "names": op_names, "prepare": op_prepare, "switch": op_switch,
       "abandon": op_abandon}

if __name__ == "__main__":
    try:
        answer = OPS[sys.argv[1]](json.loads(sys.argv[2]))
    except OSError as exc:  # a device fault in one line (the client shows the last line of stderr)
        sys.exit("%s: %s%s" % (sys.argv[1], exc.strerror or exc, " (%s)" % exc.filename if exc.filename else ""))
    print(json.dumps(answer))
