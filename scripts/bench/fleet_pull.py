#!/usr/bin/env python
"""Issue #21: a simulated pull fleet on one loopback Mosquitto, measured in one run.

N simulated agents (the same :class:`mltool.deploy.agent.Agent` code, each with its own MQTT
client and device root; release work on a pool of 8 threads per host process) in host processes
of at most 225 agents each (paho's network loop uses select(), which cannot watch file
descriptors above 1,023: 1,000 clients do not fit in one process), plus 3 real `mltool agent`
processes; a ~1 MB model PUT to a loopback HTTP server; 10% of the in-process
agents offline during the rollout and back 30 s after the publish. The controller is the real
`mltool deploy mqtt://...` command (a child process, so its CPU time is its own).

Printed per N: publish -> ok per device (p50, p99) for the devices online at the publish; the
whole fleet converged (seconds after the publish, and after the last device came back online);
broker CPU seconds; controller CPU per device; agent idle RSS (a real agent process; and the
simulated agents' host processes' RSS divided by their agents).

The in-process agents run with --no-probe by default (each probe starts the device's runtime,
~0.3 s of CPU: on a real fleet that runs on each device's own CPU, here 1,000 of them would share
2 cores); the 3 real agent processes probe as a device does. --probe probes everywhere.

Usage: .venv/bin/python scripts/bench/fleet_pull.py [--n 200 1000] [--probe] [--offline-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.artifact_server import ArtifactServer  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402


def model_1mb(path: Path) -> Path:
    if path.exists():
        return path
    from mltool._tf import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1000), keras.layers.Dense(2, activation="softmax")])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return path


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


PER_PROCESS = 225  # paho's network loop uses select(): at most 1,024 file descriptors (3 per client) per process


def serve_agents(url: str, root: str, start: int, count: int, probe: bool) -> None:
    """A host process for simulated agents sim<start>..: the same Agent code, each with its own MQTT
    client and device root, release work on a shared pool of 8 threads; runs until SIGTERM."""
    import signal

    from mltool.deploy.agent import Agent, AgentConfig
    from mltool.report.config import MqttOptions

    pool = ThreadPoolExecutor(8)
    agents = []
    for i in range(start, start + count):
        cfg = AgentConfig(mqtt=MqttOptions(url=url, device=f"sim{i:04d}").resolve(), labels={"kind": "sim"},
                          root=f"{root}/sim{i:04d}", probe=probe)
        agents.append(Agent(cfg, executor=pool))
        agents[-1].start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("ready", flush=True)
    stop.wait()
    for a in agents:
        a.stop()


def run(n: int, tmp: Path, model: Path, probe: bool, offline_s: float) -> dict:
    from mltool.deploy.pull import FleetView
    from mltool.report.config import MqttOptions

    broker = Broker(tmp / "broker").start()
    files = ArtifactServer(tmp / "files").start()
    url = broker.url("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    devices = tmp / "devices"

    def host(start: int, count: int) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, __file__, "--serve-agents", url, str(devices), str(start), str(count),
                              *(["--probe"] if probe else [])], stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    n_off = max(1, n // 10)
    online_hosts = [host(s, min(PER_PROCESS, n - s)) for s in range(n_off, n, PER_PROCESS)]
    offline_host = host(0, n_off)
    real = []
    for i in range(3):
        log = open(tmp / f"real{i}.log", "w")
        real.append(subprocess.Popen([sys.executable, "-m", "mltool", "agent", url, "--device", f"real{i}", "--label", "kind=real",
                                      "--remote-dir", str(devices / f"real{i}")], stdout=log, stderr=subprocess.STDOUT, env=env))
    view = FleetView(MqttOptions(url=url, device="bench-view").resolve())
    assert view.wait_for(lambda: sum(1 for a in view.agents.values() if a.state) == n + 3, 180), "agents did not report"
    time.sleep(3)
    rss_real = statistics.median(rss_mb(p.pid) for p in real)
    rss_hosts = sum(rss_mb(p.pid) for p in online_hosts)
    n_online = n - n_off
    offline_host.terminate()  # 10% go offline (they said so: availability "offline")
    offline_host.wait(60)

    broker_cpu0 = proc_cpu(broker.proc.pid)
    t_start = time.time()
    ctl = subprocess.Popen([sys.executable, "-m", "mltool", "deploy", url, str(model), "--name", "m", "--upload", files.url,
                            "--wait", str(offline_s + 300), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env)
    t_back: list[float] = []
    back: list[subprocess.Popen] = []

    def come_back() -> None:
        time.sleep(offline_s)
        t_back.append(time.time())
        back.append(host(0, n_off))

    th = threading.Thread(target=come_back)
    th.start()
    # The controller's own CPU time: wait4 on its pid (RUSAGE_CHILDREN would count other children).
    pipes: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: pipes.__setitem__(k, f.read())) for k, f in (("out", ctl.stdout), ("err", ctl.stderr))]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(ctl.pid, 0)
    ctl.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    out, err = pipes["out"], pipes["err"]
    th.join()
    broker_cpu = proc_cpu(broker.proc.pid) - broker_cpu0
    ctl_cpu = ru.ru_utime + ru.ru_stime
    res = json.loads(out) if out.strip() else {"counts": {}, "hosts": []}
    time.sleep(1)
    with view._cond:
        states = {d: a.model("m") for d, a in view.agents.items()}
        # latencies from the desired state's publish (after the controller's start-up and the PUT)
        t_pub = float((view.releases.get("m") or {}).get("history", [{}])[-1].get("published_at") or t_start)
    offline_names = {f"sim{i:04d}" for i in range(n_off)}
    online_lat = [s["updated"] - t_pub for d, s in states.items() if s.get("state") == "ok" and d not in offline_names]
    back_lat = [s["updated"] - t_back[0] for d, s in states.items() if s.get("state") == "ok" and d in offline_names]
    ok = sum(1 for s in states.values() if s.get("state") == "ok")
    last = max((s["updated"] for s in states.values() if s.get("state") == "ok"), default=float("nan"))
    view.close()
    for p in [*online_hosts, *back, *real]:
        p.terminate()
        p.wait(60)
    files.stop()
    broker.stop()
    return {"n": n + 3, "ok": ok, "publish_after_start_s": t_pub - t_start, "counts": res.get("counts"),
            "controller_rc": ctl.returncode, "p50": pct(online_lat, 50), "p99": pct(online_lat, 99),
            "back_p50": pct(back_lat, 50), "back_p99": pct(back_lat, 99),
            "converged_after_publish": last - t_pub, "converged_after_last_back": last - t_back[0],
            "broker_cpu_s": broker_cpu, "controller_cpu_ms_per_device": 1000 * ctl_cpu / (n + 3), "controller_cpu_s": ctl_cpu,
            "rss_real_mb": rss_real, "rss_sim_mb_per_agent": rss_hosts / n_online, "host_processes": len(online_hosts) + 1,
            "stderr_tail": err[-300:] if ctl.returncode != 0 else ""}


def ssh_push(hosts: int, tmp: Path, model: Path) -> dict:
    """For scale: the same release pushed over SSH (`mltool deploy`, --parallel N) to N emulated
    hosts (real OpenSSH servers on loopback, each its own device folder), probe on."""
    from mltool.deploy.host import DeployConfig, deploy_host, resolve_artifact
    from mltool.deploy.ssh import SshOptions
    from tests.sshd import SshServer, keygen

    key = keygen(tmp / "key")
    servers = [SshServer(tmp / f"srv{i}", tmp / "key.pub").start() for i in range(hosts)]
    roots = []
    for i in range(hosts):
        r = tmp / f"ssh{i}" / "mltool"
        r.mkdir(parents=True)
        (r / "venv").symlink_to(Path(sys.prefix))
        roots.append(r)
    art = resolve_artifact(model, "m")
    opts = SshOptions(identity=key, known_hosts=tmp / "kh", trust_new_host=True)
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(hosts) as pool:
            res = list(pool.map(lambda i: deploy_host(servers[i].target, DeployConfig(ssh=opts, root=str(roots[i])), art), range(hosts)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for srv in servers:
            srv.stop()
    return {"hosts": hosts, "changed": sum(r.status == "changed" for r in res), "wall_s": wall, "controller_cpu_ms_per_host": 1000 * cpu / hosts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="*", default=[200, 1000], help="fleet sizes (none: only the SSH push)")
    ap.add_argument("--probe", action="store_true", help="probe in the in-process agents too")
    ap.add_argument("--offline-s", type=float, default=30.0)
    ap.add_argument("--serve-agents", nargs=4, metavar=("URL", "ROOT", "START", "COUNT"), help=argparse.SUPPRESS)
    ap.add_argument("--ssh-hosts", type=int, default=10, help="also push the release over SSH to this many emulated hosts (0: skip)")
    args = ap.parse_args()
    if args.serve_agents:
        u, r, start, count = args.serve_agents
        serve_agents(u, r, int(start), int(count), args.probe)
        return
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 MQTT clients, their pipes and files
    cache = Path(tempfile.gettempdir()) / "mltool-bench-fleet"
    cache.mkdir(exist_ok=True)
    model = model_1mb(cache / "model_1mb.tflite")
    print(f"model {model.stat().st_size:,} bytes; {os.cpu_count()} CPUs; in-process agents probe: {args.probe}", flush=True)
    rows = []
    for n in args.n:
        tmp = Path(tempfile.mkdtemp(prefix=f"fleet{n}-"))
        try:
            r = run(n, tmp, model, args.probe, args.offline_s)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(f"{'devices':>8} {'ok':>6} {'p50 s':>7} {'p99 s':>7} {'back p50':>9} {'back p99':>9} {'all ok s':>9} "
          f"{'after back s':>13} {'broker cpu s':>13} {'ctl ms/dev':>11} {'agent RSS MB':>13} {'sim MB/agent':>13}")
    for r in rows:
        print(f"{r['n']:>8} {r['ok']:>6} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['back_p50']:>9.2f} {r['back_p99']:>9.2f} "
              f"{r['converged_after_publish']:>9.1f} {r['converged_after_last_back']:>13.1f} {r['broker_cpu_s']:>13.2f} "
              f"{r['controller_cpu_ms_per_device']:>11.2f} {r['rss_real_mb']:>13.1f} {r['rss_sim_mb_per_agent']:>13.2f}")
    if args.ssh_hosts:
        tmp = Path(tempfile.mkdtemp(prefix="fleet-ssh-"))
        try:
            s = ssh_push(args.ssh_hosts, tmp, model)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"for scale, SSH push (mltool deploy --parallel {s['hosts']}) of the same release to {s['hosts']} emulated hosts: "
              f"{s['changed']} changed in {s['wall_s']:.1f} s, controller CPU {s['controller_cpu_ms_per_host']:.0f} ms per host "
              "(SSH + SFTP of the model + remote steps per host, probe on)")
    print("targets: 1,000 converged within 120 s of the last coming online; controller <= 5 ms/device; agent idle RSS <= 60 MB")


if __name__ == "__main__":
    main()
