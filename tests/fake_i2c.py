"""A stand-in for ``smbus2.SMBus`` (no I2C bus can exist here: no hardware, no i2c-stub module).

Thin on purpose: only the four SMBus calls mltool makes, routed by address to register-level
models of the two ADCs, each reading an analog input ``volts(t)`` on the shared clock:

- PCF8591: a control byte selects the channel; every read returns the conversion latched by
  the previous read (so the first read after a channel switch is stale), 8-bit, Vref 3.3 V;
  0x80 after power-on.
- ADS1115: config register (MUX, PGA, MODE, DR) and conversion register; in continuous mode a
  new conversion completes every 1/DR s, and until the first one the register keeps its old
  value; signed 16-bit, big-endian on the wire.

An unknown address NACKs (``OSError(EREMOTEIO)``), a missing bus is ``FileNotFoundError``, and
``faults`` lets a test make the Nth transaction fail as a real bus glitch does.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable


class VirtualClock:
    """Time that moves only when someone sleeps or a read takes bus time: deterministic.
    ``pace`` > 0 also really sleeps ``seconds / pace`` so that a sampling thread does not
    outrun its consumer by minutes of virtual time."""

    def __init__(self, pace: float = 0.0) -> None:
        self.t = 1000.0
        self.pace = pace

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)
        if self.pace:
            time.sleep(seconds / self.pace)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)  # bus time on a real clock


class FakePCF8591:
    VREF = 3.3

    def __init__(self, inputs: dict[int, Callable[[float], float]]) -> None:
        self.inputs = inputs
        self.control = 0x00
        self.latch = 0x80

    def write_byte(self, value: int, t: float) -> None:
        self.control = value

    def read_byte(self, t: float) -> int:
        out = self.latch
        volts = self.inputs.get(self.control & 0x03, lambda _t: 0.0)(t)
        self.latch = max(0, min(255, round(volts / self.VREF * 256)))
        return out

    # SMBus block calls send a "register" byte first: to a PCF8591 that is the control byte
    def write_block(self, reg: int, data: list[int], t: float) -> None:
        self.control = reg  # the data bytes would go to the DAC

    def read_block(self, reg: int, n: int, t: float) -> list[int]:
        self.control = reg
        return [self.read_byte(t) for _ in range(n)]


class FakeADS1115:
    RATES = (8, 16, 32, 64, 128, 250, 475, 860)
    FSR = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)

    def __init__(self, inputs: dict[int, Callable[[float], float]]) -> None:
        self.inputs = inputs
        self.config = 0x8583  # power-on default: single-shot, AIN0-AIN1, +/-2.048 V, 128 SPS
        self.conversion = 0
        self.started: float | None = None  # continuous mode since

    def write_block(self, reg: int, data: list[int], t: float) -> None:
        if reg == 0x01:
            self.config = data[0] << 8 | data[1]
            self.started = t if not self.config & 0x0100 else None

    def read_block(self, reg: int, n: int, t: float) -> list[int]:
        if reg == 0x01:
            return [self.config >> 8, self.config & 0xFF]
        if self.started is not None:
            rate = self.RATES[self.config >> 5 & 0x7]
            done = int((t - self.started) * rate)  # conversions completed since the config write
            if done >= 1:
                mux = self.config >> 12 & 0x7
                assert mux >= 0b100, "the fake models single-ended inputs only"
                volts = self.inputs.get(mux - 0b100, lambda _t: 0.0)(self.started + done / rate)
                fsr = self.FSR[self.config >> 9 & 0x7]
                self.conversion = max(-32768, min(32767, round(volts / fsr * 32768))) & 0xFFFF
        return [self.conversion >> 8, self.conversion & 0xFF]


class FakeBus:
    """What ``smbus2.SMBus(n)`` returns here: the calls mltool uses, nothing else."""

    def __init__(self, devices: dict, clock, faults: Callable[[int], OSError | None] | None, transaction_s: float,
                 log: list) -> None:
        self.devices, self.clock, self.faults, self.transaction_s, self.log = devices, clock, faults, transaction_s, log
        self.closed = False

    def _device(self, addr: int):
        self.log.append(addr)
        if self.faults is not None:
            exc = self.faults(len(self.log))
            if exc is not None:
                raise exc
        if self.transaction_s:
            self.clock.advance(self.transaction_s)
        if addr not in self.devices:
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
        return self.devices[addr]

    def write_byte(self, addr: int, value: int, force=None) -> None:
        self._device(addr).write_byte(value, self.clock.now())

    def read_byte(self, addr: int, force=None) -> int:
        return self._device(addr).read_byte(self.clock.now())

    def write_i2c_block_data(self, addr: int, reg: int, data: list[int], force=None) -> None:
        self._device(addr).write_block(reg, list(data), self.clock.now())

    def read_i2c_block_data(self, addr: int, reg: int, length: int, force=None) -> list[int]:
        return self._device(addr).read_block(reg, length, self.clock.now())

    def close(self) -> None:
        self.closed = True


class FakeI2C:
    """Buses and devices, installed in place of ``smbus2.SMBus``."""

    def __init__(self, clock=None) -> None:
        self.clock = clock or RealClock()
        self.buses: dict[int, dict] = {}
        self.denied: set[int] = set()
        self.faults: Callable[[int], OSError | None] | None = None
        self.transaction_s = 0.0  # bus time per transaction (0.2 ms = 2 bytes at 100 kHz)
        self.log: list[int] = []  # addresses of every transaction
        self.opened: list[FakeBus] = []

    def add(self, bus: int, address: int, device) -> None:
        self.buses.setdefault(bus, {})[address] = device

    def SMBus(self, bus: int) -> FakeBus:  # noqa: N802 (smbus2's name)
        if bus in self.denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), f"/dev/i2c-{bus}")
        if bus not in self.buses:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), f"/dev/i2c-{bus}")
        b = FakeBus(self.buses[bus], self.clock, self.faults, self.transaction_s, self.log)
        self.opened.append(b)
        return b
