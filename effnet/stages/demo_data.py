"""``python -m effnet demo-data``: the embedded demo dataset, drawn procedurally (no download).

Ten classes of shapes and textures (circle, square, triangle, star, cross, ring,
horizontal stripes, vertical stripes, checkerboard, dots) with random colours,
positions, sizes, rotations, gradient backgrounds and pixel noise, as JPEGs of
64-96 px in the ``folders`` layout (``train/<class>/*.jpg``, ``val/<class>/*.jpg``).
The classes are invariant to horizontal flips and crops, so the reference
augmentations keep labels valid; a small CNN learns them in a few epochs.
Deterministic: the same seed gives byte-identical files.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from effnet.core.atomic import atomic_directory

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring",
           "hstripes", "vstripes", "checker", "dots")
SPLIT_IDS = {"train": 0, "val": 1}


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    while True:
        c = rng.integers(0, 256, 3)
        if avoid is None or np.abs(c - avoid).sum() > 220:
            return tuple(int(v) for v in c)


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float, inner: float = 1.0) -> list:
    points = []
    steps = sides * (2 if inner < 1 else 1)
    for k in range(steps):
        r = radius if k % 2 == 0 or inner == 1 else radius * inner
        a = angle + 2 * math.pi * k / steps
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, w: int, h: int, fg, rng: np.random.Generator) -> None:
    r = rng.uniform(0.25, 0.38) * min(w, h)  # near the centre: a centre crop keeps the whole outline
    cx, cy = w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.08, 0.08) * h
    angle = rng.uniform(0, 2 * math.pi)
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif name == "ring":
        width = max(3, int(r * rng.uniform(0.25, 0.4)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=width)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, r, 4, angle), fill=fg)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, angle), fill=fg)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, r, 5, angle, inner=0.42), fill=fg)
    elif name == "cross":
        t = r * rng.uniform(0.25, 0.4)
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * t, dx * t
            draw.polygon([(cx - dx * r + px, cy - dy * r + py), (cx + dx * r + px, cy + dy * r + py),
                          (cx + dx * r - px, cy + dy * r - py), (cx - dx * r - px, cy - dy * r - py)], fill=fg)


def _draw_texture(draw: ImageDraw.ImageDraw, name: str, w: int, h: int, fg, rng: np.random.Generator) -> None:
    x0, y0 = rng.integers(0, w // 4), rng.integers(0, h // 4)
    x1, y1 = w - rng.integers(0, w // 4), h - rng.integers(0, h // 4)
    period = int(rng.integers(6, 15))
    half = period // 2
    if name == "hstripes":
        for y in range(y0, y1, period):
            draw.rectangle([x0, y, x1, min(y + half, y1)], fill=fg)
    elif name == "vstripes":
        for x in range(x0, x1, period):
            draw.rectangle([x, y0, min(x + half, x1), y1], fill=fg)
    elif name == "checker":
        for y in range(y0, y1, half):
            for x in range(x0, x1, half):
                if ((x - x0) // half + (y - y0) // half) % 2 == 0:
                    draw.rectangle([x, y, min(x + half, x1), min(y + half, y1)], fill=fg)
    elif name == "dots":
        dot = max(1.5, period / 3)  # at 32 px smaller dots blur into a checkerboard
        for y in range(y0 + half, y1, period):
            for x in range(x0 + half, x1, period):
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=fg)


def draw_image(class_name: str, rng: np.random.Generator) -> Image.Image:
    """One random image of ``class_name``."""
    w, h = (int(v) for v in rng.integers(64, 97, 2))
    bg0, bg1 = np.array(_colour(rng)), np.array(_colour(rng))
    ramp = np.linspace(0, 1, w if rng.random() < 0.5 else h)
    ramp = ramp[None, :, None] if len(ramp) == w else ramp[:, None, None]
    background = np.broadcast_to(bg0 + (bg1 - bg0) * ramp * rng.uniform(0, 0.6), (h, w, 3))
    img = Image.fromarray(background.astype(np.uint8))
    fg = _colour(rng, avoid=(bg0 + bg1) / 2)
    draw = ImageDraw.Draw(img)
    if class_name in ("hstripes", "vstripes", "checker", "dots"):
        _draw_texture(draw, class_name, w, h, fg, rng)
    else:
        _draw_shape(draw, class_name, w, h, fg, rng)
    noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 12), (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_demo(output: str | Path, seed: int = 0, train_per_class: int = 40, val_per_class: int | None = None) -> Path:
    """Write the demo set to ``output`` (replaced atomically as a whole); return its path."""
    output = Path(output)
    val_per_class = val_per_class or max(1, train_per_class // 4)
    with atomic_directory(output) as tmp:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for class_id, name in enumerate(CLASSES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, SPLIT_IDS[split], class_id, i])
                    draw_image(name, rng).save(folder / f"{name}_{i:04d}.jpg", quality=90)
    return output


def main(args: argparse.Namespace) -> int:
    out = write_demo(args.output, args.seed, args.train_per_class, args.val_per_class)
    n = args.train_per_class, args.val_per_class or max(1, args.train_per_class // 4)
    print(f"demo-data: wrote {len(CLASSES)} classes x ({n[0]} train + {n[1]} val) images to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo-data", help="write the embedded demo dataset (folders layout)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="directory to create (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train-per-class", type=int, default=40, help="training images per class (default 40)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (default: a quarter of --train-per-class)")
    p.set_defaults(func=main)
