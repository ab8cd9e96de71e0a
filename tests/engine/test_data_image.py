"""Image front-end: modes, sizes, EXIF orientation, and handwritten-digit photos → optdigits form."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from robult_engine.data import DataError
from robult_engine.data.image import digit_to_optdigits, load_image


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "1", "CMYK", "I;16", "LA", "F"])
@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 32, 48), (4, 16, 16)])
def test_any_mode_any_shape(tmp_path, mode, shape):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray((rng.random((40, 50)) * 60000).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(rng.random((40, 50)).astype(np.float32), mode="F")
    else:
        img = Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).convert(mode)
    ext = "tiff" if mode in ("CMYK", "F", "I;16") else "png"
    path = save(img, tmp_path / f"x.{ext}")
    t = load_image(path, shape)
    assert t.shape == shape and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    a = np.full((10, 10), 30000, dtype=np.uint16)
    t = load_image(save(Image.fromarray(a), tmp_path / "g.png"), (1, 10, 10))
    assert 0.4 < float(t.mean()) < 0.5  # 30000 / 65535, not saturated white


def test_transparent_background_becomes_white(tmp_path):
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    t = load_image(save(img, tmp_path / "t.png"), (3, 20, 20))
    assert torch.allclose(t, torch.ones_like(t))


def test_cover_and_centre_crop_keeps_aspect(tmp_path):
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    ImageDraw.Draw(img).rectangle([0, 0, 49, 99], fill=(0, 0, 255))  # a blue band on the left quarter
    t = load_image(save(img, tmp_path / "r.png"), (3, 50, 50))
    assert t.shape == (3, 50, 50)
    assert float(t[0].mean()) > 0.95  # the centre crop sees only red, not the blue band


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), (255, 255, 255))
    ImageDraw.Draw(img).rectangle([0, 0, 29, 29], fill=(0, 0, 0))  # black on the left half, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = save(img, tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    t = load_image(path, (1, 60, 30), digit=False)  # displayed upright: 30 wide, 60 high
    assert t.shape == (1, 60, 30)
    assert float(t[0, :30].mean()) < 0.2 and float(t[0, 30:].mean()) > 0.8  # black now on top


def draw_digit(digit: str, size=(240, 300), ink=(25, 25, 40), paper=(240, 235, 225), width=22) -> Image.Image:
    """A crude handwritten-looking digit drawn with thick strokes, dark ink on light paper."""
    img = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(img)
    w, h = size
    if digit == "1":
        d.line([(w * 0.5, h * 0.15), (w * 0.5, h * 0.85)], fill=ink, width=width)
        d.line([(w * 0.5, h * 0.15), (w * 0.38, h * 0.27)], fill=ink, width=width)
    elif digit == "0":
        d.ellipse([w * 0.25, h * 0.15, w * 0.75, h * 0.85], outline=ink, width=width)
    elif digit == "7":
        d.line([(w * 0.25, h * 0.18), (w * 0.75, h * 0.18), (w * 0.45, h * 0.85)], fill=ink, width=width)
    return img


def test_digit_photo_is_inverted_cropped_and_scaled(tmp_path):
    path = save(draw_digit("1"), tmp_path / "one.jpg", quality=90)
    t = load_image(path, (1, 8, 8))
    assert t.shape == (1, 8, 8)
    counts = (t[0] * 16).round()
    assert torch.allclose(t[0] * 16, counts, atol=1e-5)  # block counts of a 32x32 bitmap
    assert float(t.max()) == 1.0  # full blocks exist: strokes are bright on dark
    assert float(t[0, :, 3:5].sum()) > 0.8 * float(t.sum())  # a "1" sits in the middle columns
    assert float(t[0, 0].sum()) > 0 and float(t[0, 7].sum()) > 0  # cropped: it spans the full height


def test_light_on_dark_is_not_inverted():
    dark = draw_digit("0", ink=(250, 250, 250), paper=(10, 10, 10))
    light = draw_digit("0")
    assert torch.allclose(digit_to_optdigits(dark), digit_to_optdigits(light))


def test_drawn_digits_resemble_their_optdigits_class():
    """Each drawn digit is closest (mean squared distance) to the class mean of its own optdigits class,
    among the classes 0, 1 and 7."""
    from robult_engine.data.avdigits import load_av_digits
    train = load_av_digits().splits["train"]
    means = {d: train.inputs["image"][train.target == int(d)].mean(0) for d in "017"}
    for d in "017":
        x = digit_to_optdigits(draw_digit(d))
        dist = {k: float(((m - x) ** 2).sum()) for k, m in means.items()}
        assert min(dist, key=dist.get) == d, dist


def test_blank_image_is_an_error(tmp_path):
    path = save(Image.new("L", (50, 50), 255), tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank"):
        load_image(path, (1, 8, 8))
