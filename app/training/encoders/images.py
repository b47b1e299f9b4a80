"""Image content to pixels: one preprocessing for every image encoder.

Accepted: an (n, H, W, C) uint8 array (C = 3 RGB, 1 gray or 4 RGBA), or a sequence of images,
each encoded bytes (PNG, JPEG, anything Pillow reads) or an (H, W[, C]) uint8 array.

Every image becomes RGB (gray replicated, alpha dropped) and `size` x `size`: the shorter side
is resized to `size` (bilinear, Pillow), then the center is cropped, so the aspect ratio is
kept (torchvision's Resize + CenterCrop evaluation transform). Images already RGB at
size x size are passed through untouched, without Pillow. Scaling to [0, 1] and normalization
are each encoder's: see small_cnn.py and torchvision_backbone.py.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from app.training.encoders.base import Content, require
from app.training.errors import JobError


def to_pixels(content: Content, size: int, encoder: str) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB."""
    if isinstance(content, np.ndarray) and content.dtype != object:
        if content.ndim == 3:  # (n, H, W): gray
            content = content[..., None]
        if content.ndim != 4:
            raise JobError(f"encoder {encoder!r} reads (n, H, W, C) images; got {content.shape}")
        _check_dtype(content, encoder)
        if content.shape[1:] == (size, size, 3):
            return np.ascontiguousarray(content)
    out = np.empty((len(content), size, size, 3), np.uint8)
    for i, image in enumerate(content):
        out[i] = _one(image, size, encoder, i)
    return out


def _check_dtype(a: np.ndarray, encoder: str) -> None:
    if a.dtype != np.uint8:
        raise JobError(
            f"encoder {encoder!r} reads uint8 pixels (0..255); got {a.dtype} "
            "(scale floats in [0, 1] by 255 and cast to uint8)"
        )


def _one(image: Any, size: int, encoder: str, i: int) -> np.ndarray:
    pil = require("PIL.Image", encoder, "vision", "pillow")
    if isinstance(image, bytes | bytearray | memoryview):
        try:
            img = pil.open(io.BytesIO(bytes(image)))
            img.load()
        except Exception as exc:  # Pillow raises several kinds for a bad file
            raise JobError(f"image {i} cannot be decoded: {exc}") from None
    else:
        a = np.asarray(image)
        _check_dtype(a, encoder)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim == 3 and a.shape[2] == 3 and a.shape[:2] == (size, size):
            return a
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
            raise JobError(f"image {i}: expected (H, W[, C]) with C in 1, 3, 4; got {a.shape}")
        img = pil.fromarray(a)
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), pil.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
