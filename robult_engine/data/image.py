"""Image front-end: any image file → a float tensor (C, H, W) in [0, 1] shaped like a dataset's modality.

Generic images are oriented by their EXIF tag, composited on white when transparent, converted to grey (C=1),
RGB (C=3) or RGBA (C=4), scaled to cover H×W and centre-cropped. For the AV-Digits shape (1, 8, 8) a photo
or scan of a dark-on-light handwritten digit is turned into an optdigits-like bitmap instead (see
`digit_to_optdigits`). Unreadable, truncated or non-image files give a DataError naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .base import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DIGIT_SHAPE = (1, 8, 8)  # AV-Digits / UCI optdigits


def _open_checked(p: Path):
    """`PIL.Image.open` (header only) refusing, as a DataError naming the file, an image of more pixels than
    Pillow's decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS` (Pillow itself only warns up to twice it)."""
    from PIL import Image

    try:
        img = Image.open(p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning when it is an error
        size = re.search(r"\((\d+) pixels\)", str(e))
        raise DataError(_too_large(p, int(size.group(1)) if size else None)) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        img.close()
        raise DataError(_too_large(p, img.width * img.height))
    return img


def _too_large(p: Path, pixels: int | None) -> str:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    got = f"{pixels:,} pixels; " if pixels is not None else ""
    return (f"{p}: the image is too large to load safely ({got}at most {limit:,} are accepted, Pillow's "
            f"decompression-bomb limit); scale it down first")


def open_image(path: str | Path, draft_size: tuple[int, int] | None = None):
    """Open and fully decode an image with EXIF orientation applied; returns a PIL image.

    `draft_size` (width, height): let the JPEG decoder scale down by a power of two while decoding, to no
    less than that size (much faster for large photos; the whole file is still decoded, so truncation is
    still detected).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such image file")
    try:
        img = _open_checked(p)
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB" if img.mode == "RGB" else img.mode, draft_size)
        img.load()  # decode now: a truncated file raises here, not later in a worker
        img = ImageOps.exif_transpose(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{p}: not an image file (Pillow cannot identify it)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # a frame of an animation, say
        raise DataError(_too_large(p, None)) from None
    except (OSError, ValueError, SyntaxError) as e:  # "image file is truncated", broken chunks
        raise DataError(f"{p}: the image is truncated or corrupt ({e})") from None
    if img.width == 0 or img.height == 0:
        raise DataError(f"{p}: the image is empty (0 pixels)")
    return img


def _flatten_alpha(img):
    """Composite transparent images on a white background; return a mode 'L', 'RGB' or 'RGBA' image."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16/32-bit grey: rescale, do not clip
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(1.0, float(a.max()))
        if img.mode == "F":
            hi = 1.0 if a.max() <= 1.0 else float(a.max())
        return Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV …


def _to_tensor(img) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # (C, H, W)


def resize_cover(img, height: int, width: int):
    """Scale so the image covers height×width (aspect kept), then centre-crop to exactly that size."""
    from PIL import Image

    scale = max(width / img.width, height / img.height)
    w, h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (w - width) // 2, (h - height) // 2
    return img.crop((left, top, left + width, top + height))


def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centers)
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = 0.0
    return float(centers[int(np.argmax(between))])


def digit_to_optdigits(img) -> torch.Tensor:
    """A photo or scan of one handwritten digit → an optdigits-like (1, 8, 8) tensor in [0, 1].

    optdigits images are 32×32 binary bitmaps of the digit (size-normalised, light ink on dark after
    counting) reduced to 8×8 by counting the "on" pixels of each 4×4 block (0..16), here divided by 16. The
    same is done: grey → invert when the background (border median) is light → Otsu ink mask → crop to the
    ink's bounding box → pad to a centred square → 32×32 ink coverage → binary (coverage > 1/4, which keeps
    thin pen strokes) → 4×4 block counts, stretched so the fullest block counts 16 (as in almost every
    optdigits image) → / 16.
    """
    from PIL import Image

    grey = _flatten_alpha(img).convert("L")
    if max(grey.size) > 512:  # the decision needs no more; also smooths sensor noise
        grey.thumbnail((512, 512), Image.Resampling.BOX)
    g = np.asarray(grey, dtype=np.float64) / 255.0  # (H, W)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper → make ink bright
        g = 1.0 - g
    if g.max() - g.min() < 1e-3:
        raise DataError("the image is blank: no digit to read")
    g = (g - g.min()) / (g.max() - g.min())
    ink = g > max(_otsu_threshold(g), 0.2)  # (H, W) bool
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    if len(rows) == 0:
        raise DataError("no ink found in the image: no digit to read")
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float64)
    h, w = crop.shape
    side = max(h, w)
    square = np.zeros((side, side))
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = crop
    coverage = Image.fromarray((square * 255).astype(np.uint8), mode="L").resize((32, 32), Image.Resampling.BOX)
    bitmap = (np.asarray(coverage, dtype=np.float64) / 255.0) > 0.25  # (32, 32) binary
    counts = bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float64)  # (8, 8) in 0..16
    if counts.max() == 0:
        raise DataError("the ink is too faint or too small to read a digit")
    # 98 % of optdigits images reach the full count 16 somewhere (their pen strokes are thick): stretch so the
    # fullest block is 16, staying on the lattice of counts
    counts = np.round(counts * 16.0 / counts.max())
    return torch.from_numpy((counts / 16.0).astype(np.float32)).unsqueeze(0)  # (1, 8, 8)


def load_image(path: str | Path, shape: tuple[int, int, int] = (3, 64, 64), *,
               digit: bool | None = None) -> torch.Tensor:
    """Read an image file as float32 (C, H, W) in [0, 1].

    `digit`: convert a handwritten-digit photo to an optdigits-like bitmap; None (default) does so exactly
    when `shape` is the AV-Digits shape (1, 8, 8).
    """
    c, h, w = (int(s) for s in shape)
    if c not in (1, 3, 4) or h < 1 or w < 1:
        raise DataError(f"cannot produce images of shape {tuple(shape)}: channels must be 1, 3 or 4")
    if digit is None:
        digit = (c, h, w) == DIGIT_SHAPE
    img = open_image(path, None if digit else (2 * max(h, w), 2 * max(h, w)))  # rotation-proof
    if digit:
        try:
            t = digit_to_optdigits(img)  # (1, 8, 8)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        if (c, h, w) != DIGIT_SHAPE:
            t = torch.nn.functional.interpolate(t[None], size=(h, w), mode="area")[0].expand(c, h, w).clone()
        return t
    img = _flatten_alpha(img)
    img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[c])
    return _to_tensor(resize_cover(img, h, w))  # (C, H, W)


def image_mode_channels(path: str | Path) -> int:
    """1 when the file is a grey image, else 3; reads the header only (used to infer a modality's shape)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_checked(Path(path)) as img:
            return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header, orientation not applied."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_checked(Path(path)) as img:
            return int(img.height), int(img.width)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
