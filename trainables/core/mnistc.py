"""MNIST-C's 15 corruptions (Mu & Gilmer 2019, google-research/mnist-c), batched on tensors.

Each corruption takes float images (N, C, 28, 28) in [0, 1] and, for the random ones, its random draws
as tensors (``draw_*`` makes them from a generator), so a test can feed the published code and this one
the same draws. The parameters are those the published ``corruptions.py`` runs with (each function's
default severity, which is how the released dataset was made). Where the published code calls a library
this project does not ship, the operation is written here after that library's code:
scikit-image 0.15 (``gaussian``, ``warp`` with ``AffineTransform``, ``random_noise``, ``rgb2hsv``,
``canny``) and ImageMagick 6 (``MotionBlurImage``). docs/generalization.md says what differs and by how
much. A colour image gets the same random field on every channel; edges are found on the channel mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIZE = 28  # MNIST-C is defined on 28 x 28 images; its constants (stripes, lines, centre 13.5) assume it

SHOT_NOISE = 3  # photons per unit intensity (severity 5 of [60, 25, 12, 5, 3])
IMPULSE_NOISE = 0.17  # fraction of pixels set to 0 or 1 (severity 4)
GLASS_BLUR = (0.7, 1, 2)  # sigma, max_delta, iterations (severity 1)
MOTION_BLUR = (10, 3, 45)  # radius, sigma, |angle| bound in degrees (severity 1)
SHEAR = 0.4  # radians (severity 2)
SCALE = 1 / 0.7  # inverse zoom: the digit shrinks to 70 % (severity 3)
ROTATE = 0.4  # radians (severity 2)
BRIGHTNESS = 0.5  # added to the HSV value (severity 5)
TRANSLATE = 3  # pixels along each axis (severity 3)
FOG = (3.0, 1.4)  # strength, wibble decay (severity 5)
SPATTER = (0.65, 0.3, 1, 0.65, 1.5)  # liquid mean, std, first sigma, threshold, second sigma (severity 4)
MUD = 63 / 255  # the spatter's colour
CANNY = (1.0, 0.1, 0.2)  # sigma, low and high thresholds (scikit-image's defaults)


# ---------------------------------------------------------------- helpers
def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian (radius int(truncate * sigma + 0.5)), normalized, float64."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, *, mode: str = "replicate", rows: bool = True,
             cols: bool = True) -> torch.Tensor:
    """scikit-image's ``gaussian`` on each (H, W) plane: ``replicate`` is its default mode 'nearest',
    ``constant`` pads zeros. ``cols=False`` blurs along the rows axis only (a 2-D image passed with
    ``multichannel=True``, as the published glass blur does)."""
    k = _gaussian_kernel(sigma).to(x.device, x.dtype)
    r = (len(k) - 1) // 2
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    if rows:
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    if cols:
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def _affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """scikit-image's ``warp(x, inverse_map=m)``, bilinear, zeros outside: output pixel (col, row) takes
    the input at ``m @ (col, row, 1)``; ``m`` is (N, 2, 3) in pixel coordinates."""
    n, _, h, w = x.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                                torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
    p = torch.stack([cols, rows, torch.ones_like(rows)], -1).reshape(1, h * w, 3)
    src = p @ m.to(torch.float64).transpose(1, 2)  # (N, H*W, 2): input (col, row)
    grid = torch.stack([2 * src[..., 0] / (w - 1) - 1, 2 * src[..., 1] / (h - 1) - 1], -1).reshape(n, h, w, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def _about_centre(a: torch.Tensor, size: int) -> torch.Tensor:
    """The published translation that keeps the centre ((size - 1) / 2, 13.5 for 28) fixed: (N, 2, 2) -> (N, 2, 3)."""
    c = (size - 1) / 2
    t = c * (1 - a.sum(-1, keepdim=True))
    return torch.cat([a, t], -1)


def _line(c0, r0, c1, r1, h: int, w: int) -> torch.Tensor:
    """The published ``line_from_points`` for N lines at once: (N, H, W) in [0, 1], a log-decay band of
    half-width 2.3 pixels around the line through (c0, r0), (c1, r1), kept on columns floor(c0)..ceil(c1)-1
    (none where c1 == c0)."""
    c0, r0, c1, r1 = (torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1) for v in (c0, r0, c1, r1))
    cc = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    rr = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    vertical = c1 == c0
    m = (r1 - r0) / torch.where(vertical, torch.ones_like(c1), c1 - c0)
    dist = (rr - (m * (cc - c0) + r0)).abs().clamp(0, 2.3 - 1e-10)
    band = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    keep = (cc >= torch.floor(c0)) & (cc < torch.ceil(c1)) & ~vertical
    return torch.where(keep, band, torch.zeros_like(band))


# ---------------------------------------------------------------- noise
def shot_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Poisson(SHOT_NOISE * x) / SHOT_NOISE, clipped."""
    counts = torch.poisson((x * SHOT_NOISE).double().cpu(), generator=g)
    return (counts / SHOT_NOISE).clamp(0, 1).to(x.device, x.dtype)


def draw_impulse_noise(shape, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's s&p draws: which pixels flip (probability IMPULSE_NOISE), and to salt or pepper (1/2)."""
    return torch.rand(shape, generator=g) < IMPULSE_NOISE, torch.rand(shape, generator=g) < 0.5


def impulse_noise(x: torch.Tensor, flip: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
    flip, salt = flip.to(x.device), salt.to(x.device)
    return torch.where(flip, salt.to(x.dtype), x)


# ---------------------------------------------------------------- blurs
def glass_positions(size: int = SIZE) -> list[tuple[int, int]]:
    """The (row, col) the published loop visits, in its order: rows and columns from size-1-d down to d+1."""
    d = GLASS_BLUR[1]
    return [(h, w) for h in range(size - d, d, -1) for w in range(size - d, d, -1)]


def draw_glass_blur(n: int, g: torch.Generator, size: int = SIZE):
    """Per image, iteration and visited pixel: swap or not (1/2), and the row / column offset, an integer
    in [-max_delta, max_delta) as numpy's ``randint`` draws it."""
    d, iters = GLASS_BLUR[1], GLASS_BLUR[2]
    p = len(glass_positions(size))
    swap = torch.rand(n, iters, p, generator=g) < 0.5
    dy = torch.randint(-d, d, (n, iters, p), generator=g)
    dx = torch.randint(-d, d, (n, iters, p), generator=g)
    return swap, dy, dx


def glass_blur(x: torch.Tensor, swap: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Blur (rows axis only, as published), quantize to bytes, swap pixels with a neighbour in the published
    order (each swap sees the ones before it: a loop over positions, vectorized over images), blur again."""
    n, c, h, w = x.shape
    y = torch.floor(gaussian_blur(x.double(), GLASS_BLUR[0], cols=False) * 255) / 255
    flat = y.reshape(n, c, h * w)
    swap, dy, dx = swap.to(x.device), dy.to(x.device), dx.to(x.device)
    for it in range(swap.shape[1]):
        for j, (r, col) in enumerate(glass_positions(h)):
            here = r * w + col
            there = ((r + dy[:, it, j]) * w + col + dx[:, it, j]).view(n, 1, 1).expand(n, c, 1)
            a = flat[:, :, here].unsqueeze(-1).clone()  # a view otherwise: the write below would change it
            b = flat.gather(2, there)
            s = swap[:, it, j].view(n, 1, 1)
            flat[:, :, here] = torch.where(s, b, a).squeeze(-1)
            flat.scatter_(2, there, torch.where(s, a, b))
    return gaussian_blur(flat.reshape(n, c, h, w), GLASS_BLUR[0], cols=False).clamp(0, 1).to(x.dtype)


def draw_motion_blur(n: int, g: torch.Generator) -> torch.Tensor:
    """The blur's angle in degrees, U(-45, 45)."""
    bound = MOTION_BLUR[2]
    return -bound + 2 * bound * torch.rand(n, generator=g, dtype=torch.float64)


def motion_blur(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage(radius 10, sigma 3, angle): a one-sided Gaussian of 2 * radius + 1 taps
    along the angle, each tap at a whole-pixel offset (round half down), edge pixels repeated outside; then
    truncated to bytes as the published PNG round trip does (1e-6 of slack for float error)."""
    radius, sigma, _ = MOTION_BLUR
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    a = torch.deg2rad(angle.to(torch.float64)).view(-1, 1)
    off_c = torch.ceil(i * torch.cos(a) - 0.5).long().to(x.device)  # (N, width)
    off_r = torch.ceil(i * torch.sin(a) - 0.5).long().to(x.device)
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.double().reshape(n, c, h * w)
    out = torch.zeros(n, c, h, w, dtype=torch.float64, device=x.device)
    for t in range(width):
        r = (rows + off_r[:, t].view(n, 1, 1)).clamp(0, h - 1)
        q = (cols + off_c[:, t].view(n, 1, 1)).clamp(0, w - 1)
        idx = (r * w + q).reshape(n, 1, h * w).expand(n, c, h * w)
        out += k[t] * flat.gather(2, idx).reshape(n, c, h, w)
    return (torch.floor(out * 255 + 1e-6) / 255).clamp(0, 1).to(x.dtype)


# ---------------------------------------------------------------- affine
def draw_sign(n: int, g: torch.Generator) -> torch.Tensor:
    """A random direction per image, -1 or 1 (``np.random.choice([-1, 1])``)."""
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(torch.float64)


def shear(x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """scikit-image 0.15's ``AffineTransform(shear=s)``, [[1, -sin s], [0, cos s]], about the centre."""
    s = SHEAR * sign.to(torch.float64)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    a = torch.stack([torch.stack([one, -torch.sin(s)], -1), torch.stack([zero, torch.cos(s)], -1)], -2)
    return _affine(x, _about_centre(a, x.shape[-1])).clamp(0, 1)


def rotate(x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """``AffineTransform(rotation=0.4 * sign)`` about the centre."""
    t = ROTATE * sign.to(torch.float64)
    a = torch.stack([torch.stack([torch.cos(t), -torch.sin(t)], -1), torch.stack([torch.sin(t), torch.cos(t)], -1)], -2)
    return _affine(x, _about_centre(a, x.shape[-1])).clamp(0, 1)


def scale(x: torch.Tensor) -> torch.Tensor:
    """``AffineTransform(scale=1 / 0.7)`` about the centre: the digit shrinks to 70 %."""
    a = torch.tensor([[SCALE, 0.0], [0.0, SCALE]], dtype=torch.float64).expand(len(x), 2, 2)
    return _affine(x, _about_centre(a, x.shape[-1])).clamp(0, 1)


def draw_translate(n: int, g: torch.Generator) -> torch.Tensor:
    """(N, 2) signs: the shift's direction along columns and rows."""
    return torch.stack([draw_sign(n, g), draw_sign(n, g)], -1)


def translate(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``AffineTransform(translation=3 * signs)`` as the inverse map: the image moves by -3 * signs pixels."""
    n = len(x)
    t = TRANSLATE * signs.to(torch.float64).view(n, 2, 1)
    return _affine(x, torch.cat([torch.eye(2, dtype=torch.float64).expand(n, 2, 2), t], -1)).clamp(0, 1)


# ---------------------------------------------------------------- intensity
def brightness(x: torch.Tensor) -> torch.Tensor:
    """HSV value + 0.5, clipped, hue and saturation kept. For gray this is min(x + 0.5, 1) (the published
    gray -> RGB -> HSV -> RGB -> gray round trip, whose gray weights sum to 1); RGB is scaled by V' / V."""
    if x.shape[1] == 1:
        return (x + BRIGHTNESS).clamp(0, 1)
    v = x.amax(1, keepdim=True)
    v2 = (v + BRIGHTNESS).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x)).clamp(0, 1)


def stripe(x: torch.Tensor) -> torch.Tensor:
    """The outer quarters of the columns (0..6 and 21..27 of 28) inverted."""
    w = x.shape[-1]
    outer = torch.zeros(w, dtype=torch.bool, device=x.device)
    outer[: w // 4] = True
    outer[w - w // 4:] = True
    return torch.where(outer, 1 - x, x)


# ---------------------------------------------------------------- weather
def draw_plasma(n: int, g: torch.Generator, size: int = SIZE, mapsize: int = 256, chunk: int = 512) -> torch.Tensor:
    """The top-left (size, size) of N published ``plasma_fractal`` maps, (N, size, size) in [0, 1]: its
    U(-wibble, wibble) draws come from ``g``; the maps are made ``chunk`` at a time (each is mapsize^2 floats),
    in float32 (the published float64 differs by < 1e-6 after normalization: half the time)."""

    def uniform(shape):
        return 2 * torch.rand(shape, generator=g) - 1

    return torch.cat([plasma_fractal(min(chunk, n - i), uniform, mapsize, dtype=torch.float32, crop=size)
                      for i in range(0, n, chunk)]) if n else torch.zeros(0, size, size)


def plasma_fractal(n: int, uniform, mapsize: int = 256, wibbledecay: float = FOG[1],
                   dtype: torch.dtype = torch.float64, crop: int | None = None) -> torch.Tensor:
    """The published diamond-square heightmap on a torus (N, mapsize, mapsize), normalized to [0, 1];
    with ``crop``, its top-left (crop, crop) only (the last level is then never assembled: a fifth of the time).

    Built level by level as dense grids (corners, then the centres and the two edge midpoints between
    them, interleaved), drawing U(-1, 1) noise from ``uniform(shape)`` in the published order (squares,
    then the two diamond sets); a test passes recorded draws.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal: mapsize must be a power of two, not {mapsize}")
    grid = torch.zeros(n, 1, 1, dtype=dtype)  # the corner m[0, 0] = 0
    wibble = 100.0
    while True:
        noise = wibble * wibble
        corners = grid
        acc = corners + corners.roll(-1, 1)
        acc = acc + acc.roll(-1, 2)
        centres = acc / 4 + noise * uniform(acc.shape)
        top = (centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)) / 4 + noise * uniform(acc.shape)
        left = (centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)) / 4 + noise * uniform(acc.shape)
        parts = (corners, top, left, centres)
        wibble /= wibbledecay
        if 2 * grid.shape[-1] < mapsize:
            grid = _interleave(*parts)
        elif crop is None:
            grid = _interleave(*parts)
            grid = grid - grid.amin((1, 2), keepdim=True)
            return grid / grid.amax((1, 2), keepdim=True)
        else:
            lo = torch.stack([p.amin((1, 2)) for p in parts]).amin(0).view(n, 1, 1)
            hi = torch.stack([p.amax((1, 2)) for p in parts]).amax(0).view(n, 1, 1)
            half = (crop + 1) // 2
            corner = _interleave(*(p[:, :half, :half] for p in parts))[:, :crop, :crop]
            return (corner - lo) / (hi - lo)


def _interleave(corners, top, left, centres) -> torch.Tensor:
    """(N, k, k) each -> (N, 2k, 2k): corners at even (row, col), top at (even, odd), left at (odd, even)."""
    n, k = corners.shape[0], corners.shape[-1]
    return torch.stack([torch.stack([corners, top], -1), torch.stack([left, centres], -1)], 2).reshape(n, 2 * k, 2 * k)


def fog(x: torch.Tensor, plasma: torch.Tensor) -> torch.Tensor:
    """x + 3 * the map's top-left corner, rescaled by max / (max + 3) (each image its own max)."""
    h, w = x.shape[-2:]
    layer = plasma[:, None, :h, :w].to(x.device, torch.float64)
    top = x.double().amax((1, 2, 3), keepdim=True)
    return ((x + FOG[0] * layer) * top / (top + FOG[0])).clamp(0, 1).to(x.dtype)


def draw_spatter(n: int, g: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """The liquid layer's N(0.65, 0.3^2) draws, one (size, size) plane per image."""
    mean, std = SPATTER[:2]
    return mean + std * torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)


def spatter(x: torch.Tensor, liquid: torch.Tensor) -> torch.Tensor:
    """Mud: blur the liquid (sigma 1), keep what exceeds 0.65, blur that mask (sigma 1.5), keep >= 0.8,
    and paint those pixels the mud colour in proportion."""
    _, _, s1, thr, s2 = SPATTER
    layer = gaussian_blur(liquid.to(x.device), s1)
    mask = gaussian_blur((layer > thr).to(torch.float64), s2)  # below-threshold values were zeroed: > thr is the mask
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    return (x * (1 - mask) + MUD * mask).clamp(0, 1).to(x.dtype)


# ---------------------------------------------------------------- lines
def draw_dotted_line(n: int, g: torch.Generator) -> torch.Tensor:
    """(N, 2): the rows where the line enters (column 0) and leaves (column 27), integers 0..26."""
    return torch.randint(0, SIZE - 1, (n, 2), generator=g)


def dotted_line(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A line across the image, every other pair of columns blanked (0-1 off, 2-3 on, ...; the last column off)."""
    h, w = x.shape[-2:]
    band = _line(0, rows[:, 0], w - 1, rows[:, 1], h, w)
    on = (torch.arange(w) // 2) % 2 == 1
    band = band * on.to(band.dtype)
    return (x + band[:, None].to(x.device, x.dtype)).clamp(0, 1)


def draw_zigzag(n: int, g: torch.Generator) -> torch.Tensor:
    """(N, 2): the start row r0 in 0..26 and the rise r1 - r0 in -5..4."""
    return torch.stack([torch.randint(0, SIZE - 1, (n,), generator=g), torch.randint(-5, 5, (n,), generator=g)], -1)


def zigzag(x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The published zigzag (teeth 2 long and 2 high) from column 2 to 25, tilted by atan(rise / 23):
    its segments drawn as lines and added."""
    a = b = 2.0
    c0, c1 = 2, 25
    r0 = start[:, 0].to(torch.float64)
    theta = torch.atan(start[:, 1].to(torch.float64) / (c1 - c0))
    d = (c1 - c0) / torch.cos(theta)
    # d lies in [23, 23.55) for MNIST-C's rises -5..4: every image has the same number of teeth (6)
    teeth = int((float(d.min()) - a) // (2 * a)) + 1
    if int((float(d.max()) - a) // (2 * a)) + 1 != teeth:
        raise ValueError("zigzag: rises this far apart give the images different tooth counts; draw them apart")
    pts_c = [torch.zeros_like(d)] + [torch.full_like(d, (2 * i + 1) * a) for i in range(teeth)]
    pts_r = [torch.zeros_like(d)] + [torch.full_like(d, (-1) ** i * b) for i in range(teeth)]
    last_r = (-1) ** (teeth - 1) * b
    max_c = (2 * a) * torch.floor(d / (2 * a))
    tail = d != max_c
    pts_c.append(torch.where(tail, d, pts_c[-1]))
    pts_r.append(torch.where(tail, last_r / (2 * (d - max_c)), pts_r[-1]))
    pc, pr = torch.stack(pts_c, 1), torch.stack(pts_r, 1)
    cs = torch.cos(theta)[:, None] * pc - torch.sin(theta)[:, None] * pr + c0
    rs = torch.sin(theta)[:, None] * pc + torch.cos(theta)[:, None] * pr + r0[:, None]
    h, w = x.shape[-2:]
    total = sum(_line(cs[:, i - 1], rs[:, i - 1], cs[:, i], rs[:, i], h, w) for i in range(1, cs.shape[1]))
    return (x + total[:, None].to(x.device, x.dtype)).clamp(0, 1)  # adding then clipping once = clipping each time


# ---------------------------------------------------------------- edges
def canny_edges(x: torch.Tensor) -> torch.Tensor:
    """scikit-image's ``canny`` (sigma 1, thresholds 0.1 / 0.2) of each image's channel mean: 1 on edges, 0 elsewhere."""
    sigma, low, high = CANNY
    n, c, h, w = x.shape
    img = x.double().mean(1, keepdim=True)
    smooth = gaussian_blur(img, sigma, mode="constant") / (gaussian_blur(torch.ones_like(img), sigma, mode="constant")
                                                      + torch.finfo(torch.float64).eps)
    p = F.pad(smooth, (1, 1, 1, 1), mode="replicate")[:, 0]  # scipy's 'reflect' is a repeat for one pixel
    d_rows = p[:, 2:, :] - p[:, :-2, :]
    d_cols = p[:, :, 2:] - p[:, :, :-2]
    isobel = d_rows[:, :, :-2] + 2 * d_rows[:, :, 1:-1] + d_rows[:, :, 2:]
    jsobel = d_cols[:, :-2, :] + 2 * d_cols[:, 1:-1, :] + d_cols[:, 2:, :]
    mag = torch.hypot(isobel, jsobel)
    inner = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    inner[1:-1, 1:-1] = True
    maxima = _nonmaximum(isobel, jsobel, mag, inner & (mag > 0))
    low_mask = maxima & (mag >= low)
    keep = low_mask & (mag >= high)
    while True:  # hysteresis: the 8-connected parts of low_mask that hold a strong edge
        grown = F.max_pool2d(keep[:, None].double(), 3, stride=1, padding=1)[:, 0] > 0
        grown &= low_mask
        if torch.equal(grown, keep):
            break
        keep = grown
    return keep[:, None].expand(n, c, h, w).to(x.dtype)


def _nonmaximum(isobel, jsobel, mag, mask):
    """scikit-image's bilinear non-maximum suppression: four gradient sectors, each comparing the magnitude
    with the two interpolated neighbours across the edge (later sectors win at the shared boundaries)."""
    ai, aj = isobel.abs(), jsobel.abs()
    z = F.pad(mag, (1, 1, 1, 1))

    def at(dr, dc):  # mag[r + dr, c + dc], zero outside
        h, w = mag.shape[-2:]
        return z[:, 1 + dr: 1 + dr + h, 1 + dc: 1 + dc + w]

    safe = torch.finfo(torch.float64).tiny
    w_ji = aj / ai.clamp_min(safe)
    w_ij = ai / aj.clamp_min(safe)
    same = ((isobel >= 0) & (jsobel >= 0)) | ((isobel <= 0) & (jsobel <= 0))
    opposite = ((isobel <= 0) & (jsobel >= 0)) | ((isobel >= 0) & (jsobel <= 0))
    sectors = [  # (points, weight, plus neighbours (c1, c2), minus neighbours (c1, c2))
        (same & (ai >= aj), w_ji, ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        (same & (ai <= aj), w_ij, ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        (opposite & (ai <= aj), w_ij, ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        (opposite & (ai >= aj), w_ji, ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    ]
    out = torch.zeros_like(mask)
    for pts, wt, plus, minus in sectors:
        pts = pts & mask
        ok = ((at(*plus[1]) * wt + at(*plus[0]) * (1 - wt) <= mag)
              & (at(*minus[1]) * wt + at(*minus[0]) * (1 - wt) <= mag))
        out = torch.where(pts, ok, out)
    return out
