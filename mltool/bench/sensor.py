"""``measure_sensor()``: how well a sensor source keeps its sample rate, without a model.

Check the bus before trusting a classifier: achieved rate, jitter (read time minus deadline)
p50/p99/max, late and missed samples, and how long one bus read takes.

    from mltool.bench.sensor import measure_sensor
    print(measure_sensor("i2c:1:0x48?chip=pcf8591,rate=360", seconds=10))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mltool.errors import ConfigError, DataError


def measure_sensor(spec: str, seconds: float = 5.0, *, clock: Any = None, max_retries: int | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Sample ``spec`` for ``seconds`` (counted in sample slots, so exactly ``seconds * rate``
    of them) and return the sampling figures; events (bus errors, reopens) are listed."""
    from mltool.runtime.sources.frames import SourceEvent
    from mltool.runtime.sources.i2c import i2c_stream
    from mltool.runtime.sources.open import parse_i2c
    from mltool.runtime.sources.sampler import RESTART, RunStats, SampleBlock

    if not spec.startswith("i2c:"):
        raise ConfigError(f"bench --source takes a sensor (i2c:BUS:ADDR...), not '{spec}'",
                          "to time a model on files, video or a camera use: mltool bench MODEL --pipeline SRC")
    if seconds <= 0:
        raise ConfigError(f"--seconds {seconds} must be positive", "use --seconds 10, for example")
    i2c = parse_i2c(spec)
    stream = i2c_stream(i2c, clock=clock, max_retries=max_retries)
    rate: float = i2c.rate  # type: ignore[assignment]
    target = max(2, round(seconds * rate))
    log(f"sampling {i2c.label} ({i2c.chip} channel {i2c.channel}) at {rate:g} Hz for {target / rate:g} s")
    events: list[dict[str, Any]] = []
    run = RunStats(rate, i2c.tolerance)
    t0 = time.perf_counter()
    try:
        for item in stream:
            if isinstance(item, SampleBlock):
                run.add(item.head(target - run.slots))
                if run.slots >= target:
                    break
            elif item is RESTART:
                run.restart()
            elif isinstance(item, SourceEvent):
                events.append({"event": item.kind, "message": item.message, "timestamp": item.timestamp})
                log(f"{item.kind}: {item.message}")
                if item.kind == "stalled":
                    raise DataError(f"{i2c.label} stopped delivering samples", "check the bus and the sensor")
    finally:
        stream.close()
    wall = time.perf_counter() - t0
    stats = run.stats()
    out: dict[str, Any] = {"source": spec, "device": i2c.device, "address": f"{i2c.address:#04x}", "chip": i2c.chip,
                           "channel": i2c.channel, "seconds": round(stats.samples / rate, 3), "wall_s": round(wall, 3),
                           **stats.as_dict(), "realtime": stream.realtime, "errors": stream.stats.errors,
                           "reconnects": stream.stats.reconnects,
                           "events": events}
    if i2c.chip == "ads1115":
        out["data_rate"] = i2c.ads1115_rate()
        out["gain"] = i2c.gain
    return out
