"""Our ``mnistc_*`` corruptions against google-research/mnist-c's published code, run with its libraries.

Needs what the project does not ship: scikit-image and Wand (ImageMagick's MagickWand), for example
``pip install --target /tmp/mnistc_ref --no-deps scikit-image lazy_loader Wand`` and
``apt-get install imagemagick``, then ``PYTHONPATH=.:/tmp/mnistc_ref python bench/mnistc_published.py``.
The published functions below are copied from its ``corruptions.py`` (Apache-2.0, Google LLC) with the
changes today's libraries need: ``multichannel=True`` is ``channel_axis=-1``; the shear matrix is
scikit-image 0.15's (``AffineTransform(shear=s)`` was [[1, -sin s], [0, cos s]] then, [[1, -tan s], [0, 1]]
since 0.19); ``cv2.imdecode`` of the PNG blob is PIL's. Each published call's random draws are recorded
(np.random patched) and handed to ours, so the difference is the operation's alone.

Prints, per corruption, the max and mean absolute difference (in [0, 1] units) on N digits images
resized to 28 x 28, and with ``--write`` stores the first few as tests/mnistc_reference.npz.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import skimage as sk  # noqa: E402
from skimage import feature, transform  # noqa: E402
from skimage.filters import gaussian  # noqa: E402
from wand.api import library as wandlibrary  # noqa: E402
from wand.image import Image as WandImage  # noqa: E402

from trainables.core import mnistc  # noqa: E402
from trainables.core.data import load_data  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "mnistc_reference.npz"

wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)


class MotionImage(WandImage):
    def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
        wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)


# ---------------------------------------------------------------- the published functions (default severities)
def plasma_fractal(mapsize=256, wibbledecay=3):
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        mapsize = maparray.shape[0]
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        ltsum = ldrsum + lulsum
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
        ttsum = tdrsum + tulsum
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay

    maparray -= maparray.min()
    return maparray / maparray.max()


def line_from_points(c0, r0, c1, r1):
    if c1 == c0:
        return np.zeros((28, 28))
    cc, rr = np.meshgrid(np.linspace(0, 27, 28), np.linspace(0, 27, 28), sparse=True)
    m = (r1 - r0) / (c1 - c0)

    def f(c):
        return m * (c - c0) + r0

    dist = np.clip(np.abs(rr - f(cc)), 0, 2.3 - 1e-10)
    corruption = np.log(1 - dist / 2.3) + 1
    corruption = np.clip(corruption, 0, 1)
    left = int(np.floor(c0))
    right = int(np.ceil(c1))
    corruption[:, :left] = 0
    corruption[:, right:] = 0
    return np.clip(corruption, 0, 1)


def shot_noise(x, severity=5):
    c = [60, 25, 12, 5, 3][severity - 1]
    x = np.array(x) / 255.
    x = np.clip(np.random.poisson(x * c) / float(c), 0, 1) * 255
    return x.astype(np.float32)


def impulse_noise(x, severity=4):
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    x = sk.util.random_noise(np.array(x) / 255., mode='s&p', amount=c)
    x = np.clip(x, 0, 1) * 255
    return x.astype(np.float32)


def glass_blur(x, severity=1):
    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=c[0], channel_axis=-1) * 255)
    for _ in range(c[2]):
        for h in range(28 - c[1], c[1], -1):
            for w in range(28 - c[1], c[1], -1):
                if np.random.choice([True, False], 1)[0]:
                    dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                    h_prime, w_prime = h + dy, w + dx
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    x = np.clip(gaussian(x / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255
    return x.astype(np.float32)


def motion_blur(x, severity=1):
    c = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    output = BytesIO()
    x.save(output, format='PNG')
    x = MotionImage(blob=output.getvalue())
    x.motion_blur(radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45))
    x = np.array(PILImage.open(BytesIO(x.make_blob())))
    return np.clip(np.array(x), 0, 255).astype(np.float32)


def _about_centre(params):
    a1, a2 = params[0, :2]
    b1, b2 = params[1, :2]
    return 13.5 * (1 - a1 - a2), 13.5 * (1 - b1 - b2)


def shear(x, severity=2):
    c = [0.2, 0.4, 0.6, 0.8, 1.][severity - 1]
    bit = np.random.choice([-1, 1], 1)[0]
    c *= bit
    m = np.array([[1, -np.sin(c), 0], [0, np.cos(c), 0], [0, 0, 1]])  # scikit-image 0.15's AffineTransform(shear=c)
    m[0, 2], m[1, 2] = _about_centre(m)
    aff = transform.AffineTransform(matrix=m)
    x = np.array(x) / 255.
    x = transform.warp(x, inverse_map=aff)
    x = np.clip(x, 0, 1) * 255.
    return x.astype(np.float32)


def rotate(x, severity=2):
    c = [0.2, 0.4, 0.6, 0.8, 1.][severity - 1]
    bit = np.random.choice([-1, 1], 1)[0]
    c *= bit
    aff = transform.AffineTransform(rotation=c)
    a3, b3 = _about_centre(aff.params)
    aff = transform.AffineTransform(rotation=c, translation=[a3, b3])
    x = np.array(x) / 255.
    x = transform.warp(x, inverse_map=aff)
    x = np.clip(x, 0, 1) * 255
    return x.astype(np.float32)


def scale(x, severity=3):
    c = [(1 / .9, 1 / .9), (1 / .8, 1 / .8), (1 / .7, 1 / .7), (1 / .6, 1 / .6), (1 / .5, 1 / .5)][severity - 1]
    aff = transform.AffineTransform(scale=c)
    a3, b3 = _about_centre(aff.params)
    aff = transform.AffineTransform(scale=c, translation=[a3, b3])
    x = np.array(x) / 255.
    x = transform.warp(x, inverse_map=aff)
    x = np.clip(x, 0, 1) * 255
    return x.astype(np.float32)


def brightness(x, severity=5):
    c = [.1, .2, .3, .4, .5][severity - 1]
    x = np.array(x) / 255.
    x = sk.color.gray2rgb(x)
    x = sk.color.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    x = sk.color.hsv2rgb(x)
    x = sk.color.rgb2gray(x)
    x = np.clip(x, 0, 1) * 255
    return x.astype(np.float32)


def translate(x, severity=3):
    c = [1, 2, 3, 4, 5][severity - 1]
    bit = np.random.choice([-1, 1], 2)
    dx = c * bit[0]
    dy = c * bit[1]
    aff = transform.AffineTransform(translation=[dx, dy])
    x = np.array(x) / 255.
    x = transform.warp(x, inverse_map=aff)
    x = np.clip(x, 0, 1) * 255
    return x.astype(np.float32)


def stripe(x):
    x = np.array(x).astype(np.float32)
    x[:, :7] = 255. - x[:, :7]
    x[:, 21:] = 255. - x[:, 21:]
    return x


def fog(x, severity=5):
    c = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
    x = np.array(x) / 255.
    max_val = x.max()
    x = x + c[0] * plasma_fractal(wibbledecay=c[1])[:28, :28]
    x = np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255
    return x.astype(np.float32)


def spatter(x, severity=4):
    c = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
         (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.
    liquid_layer = np.random.normal(size=x.shape, loc=c[0], scale=c[1])
    liquid_layer = gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = 63 / 255. * np.ones_like(x) * m
    x *= (1 - m)
    return np.clip(x + color, 0, 1) * 255


def dotted_line(x):
    x = np.array(x) / 255.
    r0, r1 = np.random.randint(low=0, high=27, size=2)
    corruption = line_from_points(0, r0, 27, r1)
    idx = np.arange(0, 30, 2)
    off = True
    for i in range(1, len(idx)):
        if off:
            corruption[:, idx[i - 1]:idx[i]] = 0
        off = not off
    x = np.clip(x + corruption, 0, 1) * 255
    return x.astype(np.float32)


def zigzag(x):
    x = np.array(x) / 255.
    a = 2.
    b = 2.
    c0, c1 = 2, 25
    r0 = np.random.randint(low=0, high=27)
    r1 = r0 + np.random.randint(low=-5, high=5)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    endpoints = [(0, 0)]
    for i in range(int((d - a) // (2 * a)) + 1):
        c_i = (2 * i + 1) * a
        r_i = (-1) ** i * b
        endpoints.append((c_i, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        endpoints.append((d, r_i / (2 * (d - max_c))))
    endpoints = np.array(endpoints).T
    M = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    endpoints = M.dot(endpoints)
    cs, rs = endpoints
    cs += c0
    rs += r0
    for i in range(1, endpoints.shape[1]):
        x += line_from_points(cs[i - 1], rs[i - 1], cs[i], rs[i])
        x = np.clip(x, 0, 1)
    x = x * 255
    return x.astype(np.float32)


def canny_edges(x):
    x = np.array(x) / 255.
    x = feature.canny(x).astype(np.float32)
    return x * 255


# ---------------------------------------------------------------- recording the draws
class Recorder:
    """np.random.{choice, randint, uniform, normal} patched to log what they return."""

    NAMES = ("choice", "randint", "uniform", "normal")

    def __init__(self):
        self.log: list[tuple[str, object]] = []

    def __enter__(self):
        self.saved = {n: getattr(np.random, n) for n in self.NAMES}
        for n in self.NAMES:
            setattr(np.random, n, self._wrap(n, self.saved[n]))
        return self

    def _wrap(self, name, fn):
        def call(*a, **k):
            out = fn(*a, **k)
            self.log.append((name, np.copy(out)))
            return out
        return call

    def __exit__(self, *exc):
        for n, fn in self.saved.items():
            setattr(np.random, n, fn)

    def values(self, name):
        return [v for n, v in self.log if n == name]


def params_from_draws(name: str, logs: list[Recorder], seeds: list[int]) -> tuple:
    """Our corruption's inputs beside the images (the tensors ``mnistc.<name>(x, *params)`` takes), made from
    the draws the published calls made. Fog's is the published plasma map's corner, recomputed from its seed."""
    if name == "glass_blur":
        p = len(mnistc.glass_positions())
        swap = torch.zeros(len(logs), 2, p, dtype=torch.bool)
        dy = torch.zeros(len(logs), 2, p, dtype=torch.long)
        dx = torch.zeros(len(logs), 2, p, dtype=torch.long)
        for k, rec in enumerate(logs):
            it = iter(rec.log)
            for step in range(2 * p):
                _, coin = next(it)
                if coin[0]:
                    _, d = next(it)
                    at = (k, step // p, step % p)
                    swap[at], dx[at], dy[at] = True, int(d[0]), int(d[1])
        return swap, dy, dx
    if name == "motion_blur":
        return (torch.tensor([float(r.values("uniform")[0]) for r in logs], dtype=torch.float64),)
    if name in ("shear", "rotate"):
        return (torch.tensor([float(r.values("choice")[0][0]) for r in logs], dtype=torch.float64),)
    if name == "translate":
        return (torch.tensor(np.stack([r.values("choice")[0] for r in logs]), dtype=torch.float64),)
    if name == "fog":
        maps = []
        for s in seeds:
            np.random.seed(s)
            maps.append(plasma_fractal(wibbledecay=mnistc.FOG[1])[:28, :28])
        return (torch.tensor(np.stack(maps)),)
    if name == "spatter":
        return (torch.tensor(np.stack([r.values("normal")[0] for r in logs]))[:, None],)
    if name == "dotted_line":
        return (torch.tensor(np.stack([r.values("randint")[0] for r in logs])),)
    if name == "zigzag":
        return (torch.tensor([[int(a), int(b)] for a, b in (r.values("randint") for r in logs)]),)
    return ()


DETERMINISTIC_GIVEN_DRAWS = ("glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness", "translate",
                             "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="images to compare")
    ap.add_argument("--write", type=int, default=0, help="store the first K as tests/mnistc_reference.npz")
    args = ap.parse_args()
    x = load_data("digits", size=28).test.x[: args.n]
    images = (x[:, 0].numpy() * 255).round().astype(np.uint8)
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255)
    store = {"images": images[: args.write]}
    print(f"{'corruption':14s} {'max |diff|':>10s} {'mean |diff|':>11s}  (in [0, 1] units, {len(x)} digits at 28 x 28)")
    for name in DETERMINISTIC_GIVEN_DRAWS:
        fn = globals()[name]
        outs, logs, seeds = [], [], []
        for k, im in enumerate(images):
            np.random.seed(k)
            with Recorder() as rec:
                outs.append(fn(PILImage.fromarray(im, mode="L")) / 255.0)
            logs.append(rec)
            seeds.append(k)
        ref = np.stack(outs).astype(np.float64)
        params = params_from_draws(name, logs, seeds)
        ours = getattr(mnistc, name)(x, *params)[:, 0].double().numpy()
        d = np.abs(ours - ref)
        print(f"{name:14s} {d.max():10.2e} {d.mean():11.2e}")
        if args.write:
            store[f"{name}.published"] = ref[: args.write].astype(np.float32)
            for i, t in enumerate(params):  # integers as bytes: the file stays small
                t = t[: args.write].numpy()
                store[f"{name}.param{i}"] = t.astype(np.int8) if t.dtype == np.int64 else t
    np.random.seed(0)
    g = torch.Generator().manual_seed(0)
    for name, fn, ours in (("shot_noise", shot_noise, lambda t: mnistc.shot_noise(t, g)),
                           ("impulse_noise", impulse_noise,
                            lambda t: mnistc.impulse_noise(t, *mnistc.draw_impulse_noise(t.shape, g)))):
        ref = np.stack([fn(PILImage.fromarray(im, mode="L")) / 255.0 for im in images])
        o = ours(x)[:, 0].numpy()
        print(f"{name:14s} (random: compare statistics) mean published {ref.mean():.4f} ours {o.mean():.4f}; "
              f"changed pixels published {(np.abs(ref - images / 255) > 1e-6).mean():.4f} "
              f"ours {(np.abs(o - images / 255) > 1e-6).mean():.4f}")
    if args.write:
        np.savez_compressed(REFERENCE, **store)
        print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
