"""A procedurally generated image task much harder than digits: shapes x textures, with clutter.

Ten classes: five shapes (disk, square, triangle, cross, ring) times two textures
painted on the shape (stripes or a checkerboard, random period and orientation).
Every image varies what makes a task hard and a shortcut useless: the shape's
colour and the background's (both random, the texture a darker shade of the
shape's), its scale (a third to four fifths of the image), position and rotation,
a noisy background gradient, and clutter (random line segments and blobs in
random colours, some crossing the shape). 32 x 32 x 3, 0-255, deterministic per seed.

    python benchmarks/hard_task.py --out hard.npz     # writes x_train, y_train, x_test, y_test
"""

from __future__ import annotations

import argparse

import numpy as np

SIZE = 32
SHAPES = ("disk", "square", "triangle", "cross", "ring")
TEXTURES = ("stripes", "checker")
CLASSES = tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The shape in its own frame: u, v in [-1, 1] over its bounding box."""
    if kind == "disk":
        return u**2 + v**2 <= 1.0
    if kind == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if kind == "triangle":
        return (v <= 0.8) & (v >= 1.9 * np.abs(u) - 1.1)
    if kind == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if kind == "ring":
        r = u**2 + v**2
        return (r <= 1.0) & (r >= 0.4)
    raise ValueError(kind)


def _texture(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 pattern over the image: stripes at a random angle, or a (rotated) checkerboard."""
    period = rng.uniform(3.0, 5.0)
    angle = rng.uniform(0, np.pi)
    a = x * np.cos(angle) + y * np.sin(angle)
    if kind == "stripes":
        return (np.floor(a / period) % 2).astype(bool)
    b = -x * np.sin(angle) + y * np.cos(angle)
    return ((np.floor(a / period) + np.floor(b / period)) % 2).astype(bool)


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    while True:
        colour = rng.uniform(0, 255, 3)
        if avoid is None or np.abs(colour - avoid).sum() > 180:
            return colour


def render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class `label`."""
    shape, texture = SHAPES[label // len(TEXTURES)], TEXTURES[label % len(TEXTURES)]
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype("float64")
    background = _colour(rng)
    gradient = rng.uniform(-40, 40, 3)[None, None] * ((x - SIZE / 2) / SIZE)[..., None]
    image = background[None, None] + gradient + rng.normal(0, 12, (SIZE, SIZE, 3))
    for _ in range(rng.integers(2, 5)):  # clutter behind the shape
        _clutter(image, x, y, rng)
    colour = _colour(rng, avoid=background)
    half = rng.uniform(0.33, 0.8) * SIZE / 2
    cx, cy = rng.uniform(half * 0.6, SIZE - half * 0.6, 2)
    angle = rng.uniform(0, 2 * np.pi)
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / half
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / half
    mask = _shape_mask(shape, u, v)
    pattern = _texture(texture, x, y, rng)
    shade = colour * rng.uniform(0.35, 0.6)
    painted = np.where(pattern[..., None], colour[None, None], shade[None, None])
    image = np.where(mask[..., None], painted + rng.normal(0, 8, (SIZE, SIZE, 3)), image)
    for _ in range(rng.integers(0, 3)):  # clutter in front
        _clutter(image, x, y, rng, thin=True)
    return np.clip(np.round(image), 0, 255).astype("uint8")


def _clutter(image: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, thin: bool = False) -> None:
    colour = _colour(rng)
    if thin or rng.random() < 0.5:  # a line segment
        x0, y0, x1, y1 = rng.uniform(0, SIZE, 4)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        distance = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
        mask = distance <= (0.7 if thin else rng.uniform(0.7, 1.5))
    else:  # a blob
        cx, cy = rng.uniform(0, SIZE, 2)
        mask = (x - cx) ** 2 / rng.uniform(2, 16) + (y - cy) ** 2 / rng.uniform(2, 16) <= 1.0
    image[mask] = colour


def make(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images with balanced labels, deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([render(int(label), rng) for label in labels])
    return images, labels.astype("int64")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hard.npz")
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--test", type=int, default=3000)
    args = parser.parse_args()
    x_train, y_train = make(args.train, seed=0)
    x_test, y_test = make(args.test, seed=1)
    np.savez(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.out}: {len(x_train)} training and {len(x_test)} test images, {len(CLASSES)} classes")


if __name__ == "__main__":
    main()
