"""An ADC on an I2C bus as a live signal source: ``i2c:BUS:ADDR?chip=pcf8591|ads1115&...``.

Read through ``smbus2`` (pure Python, Linux ``/dev/i2c-N``), sampled by
:mod:`~mltool.runtime.sources.sampler` on absolute deadlines, windowed like signal files.

- PCF8591 (8-bit, 4 channels): the control byte ``0x40 | channel`` selects the channel (0x40
  keeps the analog output, and with it the oscillator, running). A read returns the conversion
  started by the *previous* read, so the first read after selecting a channel is discarded:
  it holds the old channel's value. Samples are 0..255.
- ADS1115 (16-bit, 4 channels): single-ended input ``channel``, continuous conversion at a data
  rate above the sampling rate (so each read gets a fresh conversion), programmable gain.
  Samples are signed counts (-32768..32767; full scale is the gain's range).

``value = counts * scale + offset`` turns counts into the units the model was trained on.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from mltool.errors import ConfigError, DataError
from mltool.runtime.sources.sampler import Clock, SensorStream

CHIPS = ("pcf8591", "ads1115")
ADS1115_RATES = (8, 16, 32, 64, 128, 250, 475, 860)
ADS1115_GAINS = {"2/3": 6.144, "1": 4.096, "2": 2.048, "4": 1.024, "8": 0.512, "16": 0.256}  # gain: +/- volts
NO_DEVICE = {errno.EREMOTEIO, errno.ENXIO, errno.EIO}  # what a NACK looks like from the kernel driver


@dataclass
class I2CSpec:
    bus: int
    address: int
    chip: str = "pcf8591"
    channel: int = 0
    rate: float | None = None  # default: the model's sample rate
    gain: str = "1"  # ads1115
    data_rate: int | None = None  # ads1115; default: the lowest above the sampling rate
    scale: float = 1.0
    offset: float = 0.0
    tolerance: float = 0.01  # late + missed share of a window before it is flagged
    realtime: bool = True  # ask for SCHED_FIFO for the sampling thread (rt=0: do not)

    @property
    def label(self) -> str:
        return f"i2c:{self.bus}:{self.address:#04x}"

    @property
    def device(self) -> str:
        return f"/dev/i2c-{self.bus}"

    def ads1115_rate(self) -> int:
        """The ADS1115 data rate: as given, or the lowest one above the sampling rate."""
        if self.data_rate is not None:
            return self.data_rate
        assert self.rate is not None
        return next((r for r in ADS1115_RATES if r > self.rate), ADS1115_RATES[-1])

    def check(self) -> None:
        """Checks that need the final rate (it may come from the model)."""
        if self.rate is None:
            raise ConfigError(f"{self.label} needs a sample rate and there is no model rate to default to",
                              f"add rate=HZ, e.g. {self.label}?chip={self.chip}&rate=360")
        if self.chip == "ads1115":
            if self.rate > ADS1115_RATES[-1]:
                raise ConfigError(f"the ADS1115 converts at most 860 samples/s; rate={self.rate:g} is too high",
                                  "use rate=860 or lower, or another ADC")
            if self.data_rate is not None and self.data_rate < self.rate:
                fits = next(r for r in ADS1115_RATES if r >= self.rate)
                raise ConfigError(f"dr={self.data_rate} is below the sampling rate {self.rate:g} Hz: samples would repeat",
                                  f"use dr={fits} or more, or omit dr")


class PCF8591:
    def __init__(self, bus: Any, address: int, channel: int) -> None:
        self.bus, self.address = bus, address
        bus.write_byte(address, 0x40 | channel)
        bus.read_byte(address)  # the conversion from before the switch: stale

    def read(self) -> int:
        return self.bus.read_byte(self.address)


class ADS1115:
    CONVERSION, CONFIG = 0x00, 0x01

    def __init__(self, bus: Any, address: int, channel: int, gain: str, data_rate: int, clock: Clock) -> None:
        self.bus, self.address = bus, address
        pga = list(ADS1115_GAINS).index(gain)
        config = ((0b100 | channel) << 12 | pga << 9 | 0 << 8  # AINx vs GND, gain, continuous mode
                  | ADS1115_RATES.index(data_rate) << 5 | 0b11)  # data rate, comparator off
        bus.write_i2c_block_data(address, self.CONFIG, [config >> 8, config & 0xFF])
        hi, lo = bus.read_i2c_block_data(address, self.CONFIG, 2)
        if ((hi << 8 | lo) & 0x7FFF) != config & 0x7FFF:  # bit 15 reads as conversion status
            raise DataError(f"the device at {address:#04x} does not behave like an ADS1115 "
                            f"(config read back {hi << 8 | lo:#06x}, wrote {config:#06x})",
                            "check chip= (a PCF8591 has the same default address 0x48)")
        # The conversion register holds the previous result until the first conversion ends.
        clock.sleep(1.0 / data_rate + 0.0005)

    def read(self) -> int:
        hi, lo = self.bus.read_i2c_block_data(self.address, self.CONVERSION, 2)
        v = hi << 8 | lo
        return v - 0x10000 if v & 0x8000 else v


class I2CReader:
    """One opened bus with a configured chip: ``read()`` gives one sample in model units."""

    def __init__(self, spec: I2CSpec, clock: Clock) -> None:
        self.spec = spec
        self.bus = open_bus(spec)
        try:
            if spec.chip == "pcf8591":
                self.chip: PCF8591 | ADS1115 = PCF8591(self.bus, spec.address, spec.channel)
            else:
                self.chip = ADS1115(self.bus, spec.address, spec.channel, spec.gain, spec.ads1115_rate(), clock)
        except OSError as exc:
            self.close()
            if exc.errno in NO_DEVICE:
                raise DataError(f"no device answers at {spec.address:#04x} on {spec.device} ({exc.strerror})",
                                f"check the wiring and the address: `i2cdetect -y {spec.bus}` lists the devices on the bus") from None
            raise DataError(f"I2C error talking to {spec.address:#04x} on {spec.device} ({exc.strerror or exc})",
                            "check the wiring and power of the ADC") from None
        except DataError:
            self.close()
            raise

    def read(self) -> float:
        return self.chip.read() * self.spec.scale + self.spec.offset

    def close(self) -> None:
        self.bus.close()


def open_bus(spec: I2CSpec) -> Any:
    try:
        import smbus2
    except ImportError:
        raise DataError("smbus2 is not installed (it reads the I2C bus)", "pip install 'mltool[device]' (or pip install smbus2)") from None
    try:
        return smbus2.SMBus(spec.bus)
    except FileNotFoundError:
        raise DataError(f"{spec.device} does not exist: I2C is not enabled (or there is no bus {spec.bus})",
                        "enable it with `sudo raspi-config nonint do_i2c 0` (or raspi-config > Interface Options > I2C) "
                        "and reboot; `ls /dev/i2c-*` lists the buses") from None
    except PermissionError:
        raise DataError(f"permission denied opening {spec.device}",
                        "add your user to the i2c group (`sudo usermod -aG i2c $USER`) and log in again") from None
    except OSError as exc:
        raise DataError(f"cannot open {spec.device} ({exc.strerror or exc})", "check `ls -l /dev/i2c-*`") from None


def i2c_stream(spec: I2CSpec, *, clock: Clock | None = None, timeout_s: float = 5.0,
               max_retries: int | None = None) -> SensorStream:
    """The sampling thread for ``spec`` (rate already resolved). Opening errors raise here."""
    from mltool.runtime.sources.sampler import SYSTEM_CLOCK

    spec.check()
    clk = clock or SYSTEM_CLOCK
    return SensorStream(lambda: I2CReader(spec, clk), spec.rate, spec.label, tolerance=spec.tolerance,  # type: ignore[arg-type]
                        clock=clk, timeout_s=timeout_s, max_retries=5 if max_retries is None else max_retries,
                        realtime=spec.realtime)
