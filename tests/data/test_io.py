"""Decoding: RGB conversion of images, palette indices of labels, and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import save_image, save_label
from PIL import Image

from lemore.data import DatasetError
from lemore.data.io import read_image, read_label


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path, rgb):
    save_image(tmp_path / "a.png", rgb)
    img = read_image(tmp_path / "a.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 30)
    assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1))


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb):
    save_image(tmp_path / "g.jpg", rgb, "gray")
    img = read_image(tmp_path / "g.jpg")
    assert img.shape == (3, 20, 30)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_rgba_drops_alpha_keeps_colour(tmp_path, rgb):
    save_image(tmp_path / "a.png", rgb, "rgba")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (3, 20, 30)
    assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1))  # not blended with the alpha


def test_cmyk_jpeg_becomes_rgb(tmp_path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert read_image(tmp_path / "c.jpg").shape == (3, 20, 30)


@pytest.mark.parametrize("bits", [None, 1, 2, 4])
def test_palette_label_yields_indices_not_colours(tmp_path, bits):
    n = 2**bits if bits else 60
    label = (np.arange(24 * 31).reshape(24, 31) % n).astype(np.uint8)
    save_label(tmp_path / "p.png", label, palette=True, bits=bits)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
    out = read_label(tmp_path / "p.png")
    assert out.dtype == torch.int64 and out.shape == (24, 31)
    assert torch.equal(out, torch.from_numpy(label).long())


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_grayscale_label_keeps_values(tmp_path, bits):
    label = (np.arange(16 * 8).reshape(16, 8) % 2**bits).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / "g.png", bits=bits)
    assert torch.equal(read_label(tmp_path / "g.png"), torch.from_numpy(label).long())


def test_16bit_label(tmp_path):
    label = np.array([[0, 300], [1000, 7]], dtype=np.uint16)
    Image.fromarray(label).save(tmp_path / "l16.png")
    assert read_label(tmp_path / "l16.png").tolist() == [[0, 300], [1000, 7]]


def test_colour_label_is_rejected(tmp_path, rgb):
    save_image(tmp_path / "c.png", rgb)
    with pytest.raises(DatasetError, match=r"c\.png.*single-channel"):
        read_label(tmp_path / "c.png")


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_unreadable_files_name_the_file(tmp_path, content):
    (tmp_path / "bad.jpg").write_bytes(content)
    with pytest.raises(DatasetError, match=r"bad\.jpg.*(cannot|decode)"):
        read_image(tmp_path / "bad.jpg")
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(DatasetError, match=r"bad\.png.*(cannot|decode)"):
        read_label(tmp_path / "bad.png")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jpg: image file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(DatasetError, match=r"nope\.png: label file not found"):
        read_label(tmp_path / "nope.png")
