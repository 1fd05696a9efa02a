"""Checking and normalising source images before they go into TFRecords.

Valid RGB (or 3-channel YCbCr) baseline/progressive JPEGs are kept byte for byte.
Anything else that decodes (PNG, GIF, BMP, WebP, TIFF, CMYK or greyscale JPEG)
is converted to an RGB JPEG, so every reader (tf.data, DALI on CPU or GPU)
gets the same 3-channel input. An image that does not fully decode is corrupt.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from effnet.core.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
JPEG_QUALITY = 95


class CorruptImageError(UserError):
    """An image file that cannot be decoded."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: corrupt or unreadable image: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.name, self.reason)


@dataclass(frozen=True)
class CheckedImage:
    """An image ready to store: JPEG bytes and the decoded size."""

    jpeg: bytes
    height: int
    width: int
    converted: bool


def check_image(data: bytes, name: str) -> CheckedImage:
    """Decode ``data`` fully (to catch truncation) and return it as an RGB JPEG.

    ``name`` is used in the error message. Raises CorruptImageError.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            keep = img.format == "JPEG" and img.mode == "RGB"
            if keep:
                # Decoding at 1/8 scale still reads every entropy-coded byte, at a fraction of the cost.
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
                return CheckedImage(data, height, width, converted=False)
            rgb = to_rgb(img)
    except UnidentifiedImageError:
        raise CorruptImageError(name, "not in an image format PIL reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(name, f"{type(exc).__name__}: {exc}") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return CheckedImage(out.getvalue(), height, width, converted=True)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as RGB: transparency composited over white, greyscale/CMYK/palette converted."""
    img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")
