"""Decoding images and label maps into tensors, with errors that name the file.

Images are decoded with ``torchvision.io.decode_image`` in RGB mode, which turns grayscale into 3 channels,
drops an alpha channel and converts CMYK JPEGs. Labels are decoded unchanged, so a palette-mode ("P") PNG
yields its palette *indices*, which is what VOC-style label files store. torchvision does that correctly for
8-bit PNGs only: for PNGs with 1, 2 or 4 bits per pixel it returns palette indices still packed several to a
byte, and it rescales low-bit grayscale values to 0..255 (checked with torchvision 0.29). PIL writes such PNGs
by default for palette images with at most 16 colours, so label PNGs below 8 bits per pixel are decoded with
PIL instead (it unpacks palette indices; low-bit grayscale samples it scales to 0..255, which is undone here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F


class DatasetError(ValueError):
    """Bad data or a bad dataset request; the message names the file (or the choices) and the problem."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_bytes(path: Path, what: str) -> torch.Tensor:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file not found")
    try:
        return read_file(str(path))
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read {what} file ({e})") from None


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an RGB image.

    Args:
        path: a JPEG, PNG, WebP or GIF file; grayscale, RGBA and CMYK are converted to RGB.

    Returns:
        uint8 tensor (3, H, W).

    Raises:
        DatasetError: missing, empty or undecodable file (the message names it).
    """
    path = Path(path)
    data = _read_bytes(path, "image")
    try:
        img = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DatasetError(f"{path}: cannot decode image ({str(e).splitlines()[-1].strip()})") from None
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = F.to_dtype(img, torch.uint8, scale=True)
    return img


def _png_bit_depth(data: torch.Tensor) -> int | None:
    """Bit depth from the IHDR chunk (signature 8 bytes, length 4, 'IHDR' 4, width 4, height 4, depth 1)."""
    head = bytes(data[:26].tolist())
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def read_label(path: str | Path) -> torch.Tensor:
    """Decode a single-channel label map without any colour conversion.

    Args:
        path: a PNG (8 or 16 bit grayscale, or palette-mode: the palette indices are returned).

    Returns:
        int64 tensor (H, W) of the values stored in the file.

    Raises:
        DatasetError: missing or undecodable file, or a label that is not single-channel.
    """
    path = Path(path)
    data = _read_bytes(path, "label")
    depth = _png_bit_depth(data)
    try:
        if depth is not None and depth < 8:  # see the module docstring: torchvision mis-decodes these
            from PIL import Image

            with Image.open(path) as im:
                arr, mode = np.asarray(im), im.mode
            if arr.ndim != 2:
                raise DatasetError(f"{path}: label must be single-channel, got mode {mode!r}")
            if mode == "L":  # 2/4-bit grayscale: PIL scales the samples to 0..255 (x85, x17); undo that
                arr = arr // (255 // (2**depth - 1))
            return torch.from_numpy(arr.astype(np.int64))
        lbl = decode_image(data, mode=ImageReadMode.UNCHANGED)  # (C, H, W)
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"{path}: cannot decode label ({str(e).splitlines()[-1].strip()})") from None
    if lbl.shape[0] != 1:
        raise DatasetError(
            f"{path}: label must be single-channel (grayscale or palette PNG), got {lbl.shape[0]} channels; "
            "colour-coded label images must be converted to class indices first"
        )
    return lbl[0].to(torch.int64)
