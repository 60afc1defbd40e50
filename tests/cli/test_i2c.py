"""`mltool infer/bench --source i2c:...`: the real sampling loop, windowing, model and output,
over a register-level fake of the two ADCs at the smbus2 interface (no I2C bus exists here)."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from tests.fake_i2c import FakeADS1115, FakeI2C, FakePCF8591, RealClock, VirtualClock

RATE = 360
# AD8232 front end: 1.65 V bias, 100x gain (1 mV of ECG = 0.1 V); PCF8591 at Vref 3.3 V.
# Back to millivolts: mV = (counts * 3.3 / 256 - 1.65) / 0.1
PCF_MV = "scale=0.12890625,offset=-16.5"


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


@pytest.fixture
def fake_bus(monkeypatch):
    """Install the fake in place of smbus2.SMBus, on a virtual clock that the sampling loop
    and the fake ADCs share (sleeping advances it: no test waits 10 s for a window)."""
    import smbus2

    from mltool.runtime.sources import sampler

    def make(clock=None) -> FakeI2C:
        clock = clock or VirtualClock(pace=25)
        fake = FakeI2C(clock)
        monkeypatch.setattr(smbus2, "SMBus", fake.SMBus)
        if isinstance(clock, VirtualClock):
            monkeypatch.setattr(sampler, "SYSTEM_CLOCK", clock)
        return fake

    return make


@pytest.fixture(scope="module")
def recording(synth_ecg_dir) -> np.ndarray:
    """30 s of ECG in mV: a normal window, an arrhythmic one, a normal one."""
    from mltool.data.signals import read_signal

    normal = [read_signal(p) for p in sorted((synth_ecg_dir / "normal").glob("*.npy"))[:2]]
    arr = read_signal(sorted((synth_ecg_dir / "arrhythmia").glob("*.npy"))[0])
    return np.concatenate([normal[0], arr, normal[1]])


def _ecg_input(rec: np.ndarray, clock) -> callable:
    t0 = clock.now()
    return lambda t: 1.65 + 0.1 * float(rec[min(len(rec) - 1, max(0, round((t - t0) * RATE)))])


def test_pcf8591_ecg_classified_window_by_window_with_timing_in_json(cli, ecg_model, fake_bus, recording):
    fake = fake_bus()
    adc = FakePCF8591({0: _ecg_input(recording, fake.clock)})
    fake.add(1, 0x48, adc)
    r = cli(["infer", ecg_model, "--source", f"i2c:1:0x48?chip=pcf8591,channel=0,{PCF_MV}", "--max-frames", "3",
             "--json", "--alert-threshold", "0.5"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    results = [o for o in out if "predictions" in o]
    assert [x["name"] for x in results] == ["i2c:1:0x48@0.00s", "i2c:1:0x48@10.00s", "i2c:1:0x48@20.00s"]
    assert [x["predictions"][0]["label"] for x in results] == ["normal", "arrhythmia", "normal"]
    assert [x["alert"]["active"] for x in results] == [False, True, False]
    for x in results:
        s = x["sampling"]
        assert s == {"rate_hz": 360, "achieved_hz": 360.0, "samples": 3600, "late": 0, "missed": 0,
                     "jitter_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0}, "tolerance": 0.01, "ok": True}
        assert x["source"] == "i2c:1:0x48"
    summary = out[-1]
    assert summary["event"] == "summary" and summary["frames"] == 3 and summary["errors"] == 0
    assert summary["sampling"]["flagged_windows"] == 0 and summary["sampling"]["achieved_hz"] == 360.0
    assert "sampling: " in r.stderr and "windows flagged 0" in r.stderr
    assert fake.opened[-1].closed  # the bus is released when infer ends


def test_pcf8591_discards_the_stale_first_read_after_a_channel_switch(fake_bus):
    from mltool.runtime.sources import open_source

    fake = fake_bus()
    adc = FakePCF8591({0: lambda t: 0.5, 1: lambda t: 2.0})
    fake.add(1, 0x48, adc)
    src = open_source("i2c:1:0x48?channel=0", signal_window=50, rate=RATE)
    first = next(iter(src)).signal
    src.close()
    assert set(first) == {39.0}  # 0.5 V of 3.3 V in 8 bits
    # the chip now latches channel 0; its first read after selecting channel 1 returns that
    probe = fake.SMBus(1)
    probe.write_byte(0x48, 0x41)
    assert probe.read_byte(0x48) == 39 and probe.read_byte(0x48) == 155
    probe.write_byte(0x48, 0x40)
    probe.read_byte(0x48)
    src = open_source("i2c:1:0x48?channel=1", signal_window=50, rate=RATE)
    window = next(iter(src)).signal
    src.close()
    assert set(window) == {155.0}  # 2.0 V; the stale 39 never reaches a window
    assert adc.control == 0x41


def test_ads1115_continuous_mode_gain_and_signed_samples(fake_bus):
    from mltool.runtime.sources import open_source

    fake = fake_bus()
    adc = FakeADS1115({0: lambda t: 3.0, 1: lambda t: -0.5})
    adc.conversion = 0x7FFF  # left over from before: must never be read as a sample
    fake.add(1, 0x49, adc)
    src = open_source("i2c:1:0x49?chip=ads1115,channel=1,gain=2", signal_window=100, rate=RATE)
    frame = next(iter(src))
    src.close()
    # AIN1 vs GND, +/-2.048 V, continuous, 475 SPS (the lowest rate above 360 Hz), comparator off
    assert adc.config == (0b101 << 12 | 0b010 << 9 | 0 << 8 | 0b110 << 5 | 0b11)
    assert set(frame.signal) == {-8000.0}  # -0.5 V of 2.048 V in signed 16 bits
    src = open_source("i2c:1:0x49?chip=ads1115,gain=1,scale=0.000125,rate=860", signal_window=100, rate=None)
    frame = next(iter(src))
    src.close()
    assert adc.config >> 5 & 0b111 == 0b111  # 860 SPS: no rate above 860, so 860 itself
    assert frame.signal[0] == pytest.approx(3.0, abs=1e-3)  # counts * 4.096 / 32768 = volts


def test_a_stalled_read_flags_its_window(cli, ecg_model, fake_bus, recording):
    fake = fake_bus()
    fake.add(1, 0x48, FakePCF8591({0: _ecg_input(recording, fake.clock)}))
    stalled = {"done": False}

    def hang_once(n: int):  # the 1000th transaction takes 200 ms + 0.7 periods
        if n == 1000 and not stalled["done"]:
            stalled["done"] = True
            fake.clock.advance(0.2 + 0.7 / RATE)
        return None

    fake.faults = hang_once
    r = cli(["infer", ecg_model, "--source", f"i2c:1:0x48?{PCF_MV}", "--max-frames", "2", "--json"])
    assert r.exit_code == 0, r.stderr
    results = [o for o in _lines(r.stdout) if "predictions" in o]
    first, second = results[0]["sampling"], results[1]["sampling"]
    assert (first["missed"], first["late"], first["ok"]) == (71, 1, False)
    assert first["jitter_ms"]["max"] == pytest.approx(1000 * 0.7 / RATE, abs=1e-3)
    assert second["ok"] and second["missed"] == 0
    assert _lines(r.stdout)[-1]["sampling"]["flagged_windows"] == 1
    assert "TIMING: 1 late, 71 missed of 3600 samples" in r.stderr


def test_bus_error_mid_run_reopens_and_continues(cli, ecg_model, fake_bus, recording):
    fake = fake_bus()
    fake.add(1, 0x48, FakePCF8591({0: _ecg_input(recording, fake.clock)}))
    fake.faults = lambda n: OSError(errno.EIO, "Input/output error") if 2000 <= n < 2003 else None
    r = cli(["infer", ecg_model, "--source", f"i2c:1:0x48?{PCF_MV}", "--max-frames", "2", "--json"])
    assert r.exit_code == 0, r.stderr
    out = _lines(r.stdout)
    events = [(o["event"], o["message"]) for o in out if "event" in o and o["event"] != "summary"]
    assert events == [
        ("error", "i2c:1:0x48: bus error (Input/output error); reopening"),
        ("retry", "i2c:1:0x48: reopen attempt 1/5 failed (no device answers at 0x48 on /dev/i2c-1 (Input/output error))"),
        ("retry", "i2c:1:0x48: reopen attempt 2/5 failed (no device answers at 0x48 on /dev/i2c-1 (Input/output error))"),
        ("reconnected", "i2c:1:0x48: reopened after 3 attempt(s)"),
    ]
    results = [o for o in out if "predictions" in o]
    assert len(results) == 2 and all(x["sampling"]["ok"] for x in results)
    summary = out[-1]
    assert (summary["errors"], summary["reconnects"], summary["frames"]) == (1, 1, 2)


def test_bus_error_that_persists_gives_up_with_one_line(cli, ecg_model, fake_bus, recording):
    fake = fake_bus()
    fake.add(1, 0x48, FakePCF8591({0: _ecg_input(recording, fake.clock)}))
    fake.faults = lambda n: OSError(errno.EREMOTEIO, "Remote I/O error") if n >= 100 else None
    r = cli(["infer", ecg_model, "--source", "i2c:1:0x48", "--max-reconnects", "2", "--json"])
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert errors == ["Error: i2c:1:0x48: gave up after 2 failed reopen attempts (no device answers at 0x48 on "
                      "/dev/i2c-1 (Remote I/O error)). Fix: check the sensor's wiring and power; i2cdetect shows "
                      "whether it answers"]
    assert "Traceback" not in r.stderr
    kinds = [o["event"] for o in _lines(r.stdout)]
    assert kinds == ["error", "retry", "retry", "error"]


def test_opening_errors_are_one_line_with_the_fix(cli, ecg_model, fake_bus):
    # the real smbus2 on a bus that does not exist (nothing is faked here)
    r = cli(["infer", ecg_model, "--source", "i2c:99:0x48"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: /dev/i2c-99 does not exist: I2C is not enabled (or there is no bus 99). Fix: enable it with "
        "`sudo raspi-config nonint do_i2c 0` (or raspi-config > Interface Options > I2C) and reboot; "
        "`ls /dev/i2c-*` lists the buses")
    fake = fake_bus()
    fake.add(1, 0x48, FakePCF8591({}))
    fake.denied.add(1)
    r = cli(["infer", ecg_model, "--source", "i2c:1:0x48"])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == (
        "Error: permission denied opening /dev/i2c-1. Fix: add your user to the i2c group "
        "(`sudo usermod -aG i2c $USER`) and log in again")
    fake.denied.clear()
    r = cli(["infer", ecg_model, "--source", "i2c:1:0x4a"])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == (
        "Error: no device answers at 0x4a on /dev/i2c-1 (Remote I/O error). Fix: check the wiring and the "
        "address: `i2cdetect -y 1` lists the devices on the bus")
    r = cli(["infer", ecg_model, "--source", "i2c:1:0x48?chip=ads1115"])  # a PCF8591 answers there
    assert r.exit_code == 1 and "the device at 0x48 does not behave like an ADS1115" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("spec, message", [
    ("i2c:1", "expected BUS:ADDR after 'i2c:' in I2C source 'i2c:1'"),
    ("i2c:1:0x48?chip=mcp3008", "unknown chip 'mcp3008'"),
    ("i2c:1:0x48?chanel=1", "unknown option 'chanel' in I2C source 'i2c:1:0x48?chanel=1'. Fix: did you mean 'channel'?"),
    ("i2c:1:0x48?rate=500", "rate=500 differs from the model's 360 Hz"),
    ("i2c:1:0x48?chip=ads1115,dr=128", "dr=128 is below the sampling rate 360 Hz"),
    ("i2c:1:0x48?gain=2", "gain= applies to chip=ads1115"),
    ("i2c:1:0x48?channel=0,channel=1", "option 'channel' is given twice (channel=0 and channel=1)"),
    ("i2c:1:0x48?rate=abc", "rate=abc is not a number"),
    ("i2c:1:0x48?rate=0.1", "rate=0.1 is out of range in I2C source 'i2c:1:0x48?rate=0.1'. Fix: use a number from 1 to 10000"),
])
def test_usage_errors_exit_2(cli, ecg_model, spec, message):
    r = cli(["infer", ecg_model, "--source", spec])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr


def test_image_model_refuses_an_i2c_source(cli, fire_models):
    r = cli(["infer", fire_models["int8"], "--source", "i2c:1:0x48"])
    assert r.exit_code == 2 and "i2c:1:0x48 gives signal samples, but this model takes images" in r.stderr


def test_bench_source_reports_rate_and_jitter_on_the_real_clock(cli, fake_bus):
    fake = fake_bus(RealClock())
    fake.add(1, 0x48, FakeADS1115({0: lambda t: 1.0}))
    r = cli(["bench", "--source", "i2c:1:0x48?chip=ads1115,rate=360", "--seconds", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    rep = r.json()
    assert rep["samples"] == 360 and rep["seconds"] == 1.0 and rep["data_rate"] == 475 and rep["chip"] == "ads1115"
    assert rep["achieved_hz"] == pytest.approx(360, rel=0.05)  # a loaded machine may miss a few
    assert isinstance(rep["realtime"], bool)
    j = rep["jitter_ms"]
    assert 0 <= j["p50"] <= j["p99"] <= j["max"] and rep["read_ms"]["p50"] >= 0
    assert "achieved" in r.stderr and "jitter p50" in r.stderr
    r = cli(["bench", "--source", "i2c:1:0x48?chip=ads1115"])
    assert r.exit_code == 2 and "i2c:0x48" not in r.stderr and "needs a sample rate" in r.stderr
    r = cli(["bench", "--source", "clip.mp4"])
    assert r.exit_code == 2 and "bench --source takes a sensor" in r.stderr
    r = cli(["bench"])
    assert r.exit_code == 2 and "no models given" in r.stderr
