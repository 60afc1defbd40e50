"""Synthetic stand-ins for datasets that cannot be downloaded here (fire images, ECG windows).

They are written in exactly the layout the real datasets use, so a real dataset drops in
with no other change, and each carries a ``SYNTHETIC.txt`` marker that training records in
``mltool.json`` (``dataset.synthetic: true``). Accuracy on them says the pipeline works; it
says nothing about real fires or real hearts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mltool.data.tasks import SYNTHETIC_MARKER
from mltool.errors import ConfigError, DataError, did_you_mean

ECG_RATE_HZ = 360
ECG_SECONDS = 10


@dataclass
class SynthResult:
    name: str
    out_dir: Path
    counts: dict[str, int]

    def as_dict(self) -> dict:
        return {"dataset": self.name, "path": str(self.out_dir), "classes": self.counts, "synthetic": True}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled to h x w."""
    grid = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """An ordinary scene: sky/wall/forest/night background with a horizon and a few objects."""
    h = w = size
    yy = np.linspace(0, 1, h)[:, None, None]
    kind = rng.integers(0, 5)
    palettes = {
        0: ([0.35, 0.55, 0.9], [0.75, 0.85, 1.0], [0.25, 0.5, 0.2]),  # sky + grass
        1: ([0.8, 0.75, 0.65], [0.9, 0.88, 0.8], [0.45, 0.35, 0.25]),  # room: wall + floor
        2: ([0.1, 0.25, 0.1], [0.2, 0.4, 0.2], [0.25, 0.2, 0.12]),  # forest
        3: ([0.02, 0.03, 0.12], [0.1, 0.1, 0.25], [0.05, 0.05, 0.08]),  # night
        4: ([0.95, 0.45, 0.2], [0.95, 0.75, 0.4], [0.2, 0.15, 0.15]),  # sunset: orange, a hard negative
    }
    top, bottom, ground = (np.array(c) for c in palettes[int(kind)])
    img = top + (bottom - top) * yy
    img = np.broadcast_to(img, (h, w, 3)).copy()
    horizon = int(h * rng.uniform(0.5, 0.8))
    img[horizon:] = ground * rng.uniform(0.8, 1.2)
    img *= (0.85 + 0.3 * _smooth_noise(rng, h, w, 6))[..., None]
    for _ in range(rng.integers(1, 5)):  # boxes, discs: furniture, cars, lamps, signs
        color = rng.random(3)
        if rng.random() < 0.25:  # some objects are red or orange
            color = np.array([rng.uniform(0.8, 1.0), rng.uniform(0.2, 0.6), rng.uniform(0.0, 0.2)])
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        hh, ww = rng.integers(4, h // 2), rng.integers(4, w // 2)
        if rng.random() < 0.5:
            img[y0 : y0 + hh, x0 : x0 + ww] = color
        else:
            cy, cx, r = y0 + hh / 2, x0 + ww / 2, min(hh, ww) / 2
            yg, xg = np.mgrid[0:h, 0:w]
            img[(yg - cy) ** 2 + (xg - cx) ** 2 < r * r] = color
    return np.clip(img, 0, 1)


def _add_flames(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add 1-3 flickering flame tongues with a white-yellow core, orange body, red edge and glow."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    intensity = np.zeros((h, w))
    for _ in range(rng.integers(1, 4)):
        cx = rng.uniform(0.15, 0.85) * w
        base = rng.uniform(0.6, 0.98) * h
        height = rng.uniform(0.25, 0.6) * h
        width = rng.uniform(0.07, 0.2) * w
        t = (base - yy) / height  # 0 at the base, 1 at the tip
        sway = np.sin(t * rng.uniform(4, 9) + rng.uniform(0, 6)) * width * 0.35 * np.clip(t, 0, 1)
        local_w = width * np.clip(1 - t, 0.02, 1) ** 0.7
        d = ((xx - cx - sway) / local_w) ** 2 + np.where(t < 0, (t * height / (0.6 * width)) ** 2, 0)
        tongue = np.exp(-d) * (t < 1.05)
        intensity = np.maximum(intensity, tongue)
    intensity *= 0.65 + 0.7 * _smooth_noise(rng, h, w, 8)
    intensity = np.clip(intensity, 0, 1)
    fire = np.stack(
        [np.clip(intensity * 2.2, 0, 1), np.clip((intensity - 0.25) * 1.7, 0, 1), np.clip((intensity - 0.7) * 3, 0, 1)],
        axis=-1,
    )
    alpha = np.clip(intensity * 1.6, 0, 1)[..., None]
    glow = np.clip(intensity * 0.35, 0, 0.35)[..., None] * np.array([1.0, 0.45, 0.1])
    return np.clip(img * (1 - alpha) + fire * alpha + glow, 0, 1)


def synth_fire(out_dir: Path, per_class: int, seed: int, size: int = 96) -> dict[str, int]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = {}
    for cls in ("fire", "no_fire"):
        d = out_dir / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _scene(rng, size)
            if cls == "fire":
                img = _add_flames(rng, img)
            img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
            pixels = Image.fromarray((img * 255).astype(np.uint8))
            # Mixed formats on purpose: real scraped datasets are a mix too.
            ext = ".jpg" if i % 3 == 0 else ".png"
            pixels.save(d / f"{cls}_{i:04d}{ext}", quality=90) if ext == ".jpg" else pixels.save(d / f"{cls}_{i:04d}{ext}")
        counts[cls] = per_class
    return counts


def _beat(t: np.ndarray, wide: bool, p_wave: bool, amp: float) -> np.ndarray:
    """One PQRST complex centred on the R peak at t=0 (seconds), as a sum of Gaussians."""
    qrs = 2.4 if wide else 1.0
    waves = [
        (-0.10 * amp, -0.030 * qrs, 0.010 * qrs),  # Q
        (1.00 * amp * (1.3 if wide else 1.0), 0.0, 0.012 * qrs),  # R
        (-0.25 * amp, 0.032 * qrs, 0.012 * qrs),  # S
        ((-0.35 if wide else 0.30) * amp, 0.28 if wide else 0.25, 0.05),  # T (inverted after a PVC)
    ]
    if p_wave:
        waves.append((0.15 * amp, -0.20, 0.025))
    out = np.zeros_like(t)
    for a, mu, sigma in waves:
        out += a * np.exp(-((t - mu) ** 2) / (2 * sigma**2))
    return out


def ecg_window(rng: np.random.Generator, arrhythmic: bool, rate: int = ECG_RATE_HZ, seconds: int = ECG_SECONDS) -> np.ndarray:
    """A single-lead ECG in millivolts. Normal: regular sinus rhythm. Arrhythmic: atrial
    fibrillation (irregular RR, no P waves), premature wide-QRS beats, or both."""
    n = rate * seconds
    t = np.arange(n) / rate
    hr = rng.uniform(55, 100)
    rr_mean = 60.0 / hr
    amp = rng.uniform(0.8, 1.6)
    mode = int(rng.integers(0, 3)) if arrhythmic else -1
    af = mode in (0, 2)
    pvc_rate = 0.25 if mode in (1, 2) else 0.0
    sig = np.zeros(n)
    beat_t = rng.uniform(0.1, rr_mean)
    while beat_t < seconds + 0.5:
        wide = rng.random() < pvc_rate
        sig += _beat(t - beat_t, wide=wide, p_wave=not af and not wide, amp=amp)
        if af:
            rr = rr_mean * rng.uniform(0.55, 1.45)
        else:
            rr = rr_mean * (1 + rng.normal(0, 0.02))
        if wide:
            rr *= 1.35  # compensatory pause
        nxt_premature = rng.random() < pvc_rate
        beat_t += rr * (0.7 if nxt_premature else 1.0)
    if af:  # fibrillatory waves instead of P waves
        sig += 0.04 * amp * np.sin(2 * np.pi * rng.uniform(5, 8) * t + rng.uniform(0, 6))
    sig += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6))  # breathing
    sig += 0.02 * np.sin(2 * np.pi * 50 * t)  # mains hum
    sig += rng.normal(0, rng.uniform(0.01, 0.04), n)
    return sig.astype(np.float32)


def synth_ecg(out_dir: Path, per_class: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {}
    for cls, arrhythmic in (("normal", False), ("arrhythmia", True)):
        d = out_dir / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sig = ecg_window(rng, arrhythmic)
            if i % 2 == 0:
                np.save(d / f"{cls}_{i:04d}.npy", sig)
            else:
                np.savetxt(d / f"{cls}_{i:04d}.csv", sig, fmt="%.5f", header="ecg_mv", comments="")
        counts[cls] = per_class
    return counts


_NOTES = {
    "fire": "Procedural images: flame-coloured tongues with glow (fire/) vs. ordinary scenes, "
    "including orange sunsets and red objects (no_fire/). Written as mixed PNG/JPEG.",
    "ecg": f"Single-lead ECG windows, {ECG_RATE_HZ} Hz x {ECG_SECONDS} s = {ECG_RATE_HZ * ECG_SECONDS} samples in mV: "
    "regular sinus rhythm (normal/) vs. atrial fibrillation (irregular RR, no P waves) and/or "
    "premature wide-QRS beats (arrhythmia/). Written as mixed .npy/.csv.",
}


def synthesize(name: str, out_dir: str | Path, per_class: int = 300, seed: int = 0) -> SynthResult:
    """Write a synthetic ``fire`` or ``ecg`` dataset into ``out_dir`` (class-per-subfolder)."""
    if name not in _NOTES:
        raise ConfigError(f"no synthetic generator for '{name}'", did_you_mean(name, _NOTES))
    if per_class < 2:
        raise ConfigError(f"--count {per_class} is too small", "use at least 2 samples per class")
    out = Path(out_dir).expanduser()
    if out.exists() and any(p for p in out.iterdir() if p.name != SYNTHETIC_MARKER):
        raise DataError(f"{out} already exists and is not empty", "choose a new OUT_DIR or delete the old one")
    out.mkdir(parents=True, exist_ok=True)
    counts = synth_fire(out, per_class, seed) if name == "fire" else synth_ecg(out, per_class, seed)
    (out / SYNTHETIC_MARKER).write_text(
        f"SYNTHETIC DATA written by `mltool datasets synth {name}` (seed {seed}).\n"
        f"{_NOTES[name]}\nIt exercises the pipeline; it is not a substitute for real data.\n"
    )
    return SynthResult(name, out, counts)
