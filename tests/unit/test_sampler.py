"""The sampling loop's timing, on an injected clock: deadlines, late and missed samples, stats."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest

from mltool.errors import DataError
from mltool.runtime.sources.frames import SourceEvent
from mltool.runtime.sources.sampler import RESTART, SampleBlock, SensorStream, sample, window_stats
from mltool.runtime.sources.signals import SensorSource
from tests.fake_i2c import VirtualClock

RATE = 360.0
P = 1 / RATE


def _collect(read, n, clock, block=50):
    stop = threading.Event()
    out: list[SampleBlock] = []
    for b in sample(read, RATE, clock=clock, stop=stop, block=block):
        out.append(b)
        if sum(len(x) for x in out) >= n:
            stop.set()
    return (np.concatenate([b.values for b in out]), np.concatenate([b.times for b in out]),
            np.concatenate([b.late for b in out]))


def test_deadlines_are_absolute_so_slow_reads_do_not_drift():
    clock = VirtualClock()
    n = iter(range(10**6))

    def read():  # every read takes 0.9 ms of bus time: sleep(1/rate) after it would drift 32%
        clock.advance(0.0009)
        return next(n)

    values, times, late = _collect(read, 3600, clock)
    assert np.allclose(times[:3600], np.arange(3600) * P, atol=1e-9)
    assert np.all(late == pytest.approx(0, abs=1e-9))
    assert list(values[:5]) == [0, 1, 2, 3, 4]
    st = window_stats(times[:3600], late[:3600], RATE, 0.01)
    assert st.achieved_hz == pytest.approx(360.0) and st.late == st.missed == 0 and st.ok


def test_stall_counts_missed_slots_holds_the_value_and_flags_the_window():
    clock = VirtualClock()
    k = iter(range(10**6))

    def read():
        i = next(k)
        if i == 1000:  # one read hangs 200 ms + 0.7 periods
            clock.advance(0.2 + 0.7 * P)
        return i

    values, times, late = _collect(read, 3600, clock)
    missed = np.isnan(late)
    assert missed.sum() == 71 and np.flatnonzero(missed)[0] == 1001
    assert np.all(values[1001:1072] == 1000)  # slots held at the last value read
    assert values[1072] == 1001 and late[1072] == pytest.approx(0.7 * P)
    deadlines = times - np.nan_to_num(late)  # a read's time is its deadline plus its lateness
    assert np.allclose(deadlines[:3600], np.arange(3600) * P, atol=1e-6)  # slots stay on the grid
    st = window_stats(times[:3600], late[:3600], RATE, 0.01)
    assert (st.missed, st.late, st.samples) == (71, 1, 3600)
    assert not st.ok and st.jitter_ms["max"] == pytest.approx(0.7 * P * 1000, abs=1e-4)
    assert st.achieved_hz == pytest.approx((3600 - 71 - 1) / (times[3599] - times[0]), rel=1e-6)
    ok = window_stats(times[:3600], late[:3600], RATE, 0.02)  # 72 of 3600 is within 2%
    assert ok.ok


def test_jitter_percentiles_from_sleep_overshoot():
    class Overshoot(VirtualClock):
        calls = 0

        def sleep(self, seconds):
            self.calls += 1
            super().sleep(seconds + (0.0003 if self.calls % 10 == 0 else 0.00005))

    clock = Overshoot()
    _, times, late = _collect(lambda: 0.0, 1000, clock)
    st = window_stats(times[:1000], late[:1000], RATE, 0.01)
    assert st.jitter_ms["p50"] == pytest.approx(0.05, abs=1e-6)
    assert st.jitter_ms["max"] == pytest.approx(0.3, abs=1e-6)
    assert st.late == 0 and st.ok


class _Reader:
    def __init__(self, values, fail_at=None):
        self.values = iter(values)
        self.fail_at = fail_at
        self.n = 0
        self.closed = False

    def read(self):
        self.n += 1
        if self.fail_at is not None and self.n == self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        return next(self.values)

    def close(self):
        self.closed = True


def test_stream_reopens_after_a_bus_error_and_windows_restart():
    clock = VirtualClock(pace=50)
    opened: list[_Reader] = []
    attempts = iter([None, OSError(errno.EREMOTEIO, "Remote I/O error"), None])

    def opener():
        exc = next(attempts, None)
        if exc is not None:
            raise exc
        r = _Reader(range(10**6), fail_at=500 if not opened else None)
        opened.append(r)
        return r

    stream = SensorStream(opener, RATE, "adc", clock=clock, backoff=(0.01, 0.02))
    src = SensorSource(stream, window=360, hop=360, tolerance=0.01)
    seen: list = []
    try:
        for item in src:
            seen.append(item)
            if sum(1 for x in seen if not isinstance(x, SourceEvent)) >= 3:
                break
    finally:
        src.close()
    events = [(x.kind, x.message) for x in seen if isinstance(x, SourceEvent)]
    assert [k for k, _ in events] == ["error", "retry", "reconnected"]
    assert events[0][1] == "adc: bus error (Input/output error); reopening"
    assert events[1][1] == "adc: reopen attempt 1/5 failed (Remote I/O error)"
    frames = [x for x in seen if not isinstance(x, SourceEvent)]
    assert frames[0].signal[0] == 0 and frames[0].sampling.ok
    # the window cut by the error (samples 360..498) is dropped: the next starts after the reopen
    assert frames[1].signal[0] == 0 and frames[1] is not frames[0]
    assert opened[0].closed and src.stats.errors == 1 and src.stats.reconnects == 1
    assert src.sampling_summary()["achieved_hz"] == pytest.approx(360.0, rel=1e-6)


def test_stream_gives_up_after_n_failed_reopens():
    clock = VirtualClock(pace=50)
    first = _Reader(range(10**6), fail_at=20)
    readers = iter([first])

    def opener():
        r = next(readers, None)
        if r is None:
            raise OSError(errno.ENXIO, "No such device or address")
        return r

    stream = SensorStream(opener, RATE, "adc", clock=clock, backoff=(0.01, 0.01), max_retries=2)
    seen = []
    with pytest.raises(DataError) as err:
        for item in stream:
            seen.append(item)
    stream.close()
    assert err.value.one_line() == ("adc: gave up after 2 failed reopen attempts (No such device or address). "
                                    "Fix: check the sensor's wiring and power; i2cdetect shows whether it answers")
    kinds = [x.kind for x in seen if isinstance(x, SourceEvent)]
    assert kinds == ["error", "retry", "retry", "error"]
    assert any(x is RESTART for x in seen)


def test_a_consumer_that_falls_behind_drops_old_samples_instead_of_queueing():
    import time

    clock = VirtualClock(pace=100)
    stream = SensorStream(lambda: _Reader(range(10**7)), RATE, "adc", clock=clock, max_backlog=100)
    items = []
    try:
        for item in stream:
            if not items:
                time.sleep(0.3)  # inference far slower than the sensor
            items.append(item)
            if any(isinstance(x, SourceEvent) for x in items) and len(items) > 5:
                break
    finally:
        stream.close()
    drop = next(x for x in items if isinstance(x, SourceEvent))
    assert drop.kind == "dropped" and "use a larger --hop" in drop.message
    assert items[items.index(drop) + 1] is RESTART and stream.stats.dropped == 1


@pytest.mark.parametrize("timed", [False, True])
def test_hop_longer_than_the_window_holds_for_chunked_sources(timed):
    """Sensors and stdin deliver a few samples at a time: a --hop longer than the window must
    still skip hop - window samples (it used to skip only what was buffered)."""
    from mltool.runtime.sources.signals import SignalSource

    data = np.arange(200, dtype=np.float32)

    def chunks():
        for i in range(0, len(data), 7):
            v = data[i : i + 7]
            if timed:
                t = np.arange(i, i + len(v)) / 100.0
                yield SampleBlock(v, t, np.zeros(len(v)), np.zeros(len(v)), 0.0)
            else:
                yield v
            if timed and i == 140:
                yield RESTART  # a gap: windowing restarts after it, whatever was to be skipped

    src = SignalSource("x", chunks, window=10, hop=30, rate=100.0)
    frames = [f for f in src if not isinstance(f, SourceEvent)]
    firsts = [int(f.signal[0]) for f in frames]
    if timed:  # samples 0..146 before the gap, 147.. after it
        assert firsts == [0, 30, 60, 90, 120, 147, 177]
        assert [round(f.sampling.as_dict()["rate_hz"]) for f in frames] == [100] * len(frames)
    else:
        assert firsts == [0, 30, 60, 90, 120, 150, 180]
    for f in frames:
        assert np.array_equal(f.signal, np.arange(f.signal[0], f.signal[0] + 10))
