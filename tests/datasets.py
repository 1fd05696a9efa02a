"""Small real datasets on disk for the data tests."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from effnet.formats.tfrecord import iter_records


def jpeg_bytes(seed: int, size=(48, 40), mode="RGB", fmt="JPEG") -> bytes:
    """A random image encoded as ``fmt`` in colour ``mode``."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_folders(root: Path, train: dict[str, int], val: dict[str, int]) -> dict[str, str]:
    """``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``; return {path: class}."""
    written = {}
    seed = 0
    for split, counts in (("train", train), ("val", val)):
        for cls, n in counts.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                path = folder / f"{cls}_{i}.jpg"
                path.write_bytes(jpeg_bytes(seed))
                written[str(path)] = cls
    return written


def read_shard(shard: Path) -> list[dict]:
    """Every example of one shard, parsed, in order."""
    from tensorflow.core.example import example_pb2

    out = []
    for _, data in iter_records(shard):
        f = example_pb2.Example.FromString(data).features.feature
        out.append({
            "encoded": f["image/encoded"].bytes_list.value[0],
            "label": f["image/class/label"].int64_list.value[0],
            "text": f["image/class/text"].bytes_list.value[0].decode(),
            "synset": f["image/class/synset"].bytes_list.value[0].decode(),
            "filename": f["image/filename"].bytes_list.value[0].decode(),
            "height": f["image/height"].int64_list.value[0],
            "width": f["image/width"].int64_list.value[0],
            "format": f["image/format"].bytes_list.value[0],
        })
    return out


def read_split(directory: Path, split: str) -> list[dict]:
    """Every example of a split's shards, parsed, in shard order."""
    return [e for shard in sorted(Path(directory).glob(f"{split}-*")) if shard.suffix != ".idx"
            for e in read_shard(shard)]


def copy_files(src: Path, dst: Path) -> Path:
    """Copy the plain files of ``src`` into a new directory ``dst`` (to damage the copy)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst
