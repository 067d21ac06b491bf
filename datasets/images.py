"""Image files <-> uint8 arrays, shared by every dataset (colour order changes only here).

Colour images are held as RGB ``(H, W, 3)`` and grey ones as ``(H, W, 1)``; OpenCV's BGR order
is converted at I/O (docs/BENCHMARK.md §0). Nothing here imports TensorFlow or a dataset module,
so any module (the synthetic face generator included) can use it without an import circle.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cli_common import UserError

FORMATS = ("jpg", "png")  # encode_image: OpenCV JPEG quality 95, or lossless PNG
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ACCEPTED_FORMATS = "a JPEG, PNG, BMP, WebP or TIFF file"  # what decode_image's error says it reads


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, either byte order

# OpenCV's own warnings ("TIFFRGBAImageOK: Sorry, can not handle images with 32-bit samples") would
# precede the error naming the file that decode_image raises for the same image: errors only.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _png_grey_with_alpha(data: bytes) -> bool:
    """True for a PNG whose IHDR colour type is 4 (grey + alpha): byte 25 of the file."""
    return len(data) > 25 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[25] == 4


def _tiff_with_alpha(data: bytes, keep_grey: bool) -> np.ndarray | None:
    """A TIFF with an alpha channel, decoded by Pillow with the colour under the alpha kept (RGB, or
    grey as ``(H, W, 1)`` with ``keep_grey``); None for any other file, or one Pillow cannot read.

    OpenCV's TIFF reader (libtiff's RGBA interface) multiplies the colour by an unassociated alpha,
    even with ``IMREAD_UNCHANGED``: a half-transparent red 200 would read as 100. Pillow applies the
    TIFF's orientation on load, as OpenCV does; 16-bit samples are reduced to 8 bits by both."""
    if data[:4] not in _TIFF_SIGNATURES:
        return None
    import io
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                if not any(band in ("A", "a") for band in image.getbands()):
                    return None
                image.load()
                image = ImageOps.exif_transpose(image)  # a no-op where Pillow's TIFF reader applied it
                if image.mode in ("RGBa", "La"):  # associated (premultiplied) alpha: divided out
                    image = image.convert(image.mode.upper())
                grey = image.mode.startswith("L")  # LA: grey with alpha; RGBA, PA (a palette): colour
                pixels = np.asarray(image.convert("L" if grey else "RGB"))
    except Exception:  # noqa: BLE001 - a TIFF Pillow cannot decode: OpenCV's reader decides
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None] if keep_grey else np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels)


def decode_image(data: bytes, name: str, *, keep_grey: bool = False) -> np.ndarray:
    """Decode image bytes to uint8; ``name`` is used in the error message.

    By default the result is RGB ``(H, W, 3)`` (a grey file is expanded, as OpenCV does). With
    ``keep_grey`` a single-channel file (a grey PNG with alpha too) comes back as ``(H, W, 1)``
    and a colour one as RGB. Alpha is dropped, keeping the colour under it (a TIFF with alpha is read
    by Pillow for that), and 16-bit files are reduced to 8 bits by keeping each sample's high byte
    (``v >> 8``, as OpenCV reads a 16-bit PNG; its TIFF reader, which rounds ``v / 257``, is not used
    for that).
    """
    tiff = _tiff_with_alpha(data, keep_grey)
    if tiff is not None:
        return tiff
    buffer = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_ANYCOLOR if keep_grey else cv2.IMREAD_COLOR
    if keep_grey and _png_grey_with_alpha(data):  # OpenCV would expand it to three channels
        flags = cv2.IMREAD_GRAYSCALE
    is_tiff = data[:4] in _TIFF_SIGNATURES
    if is_tiff:  # OpenCV's TIFF reader scales 16-bit colour to 8 bits with rounding (PNG keeps the high
        flags |= cv2.IMREAD_ANYDEPTH  # byte): read the 16 bits, and keep the high byte as for PNG
    image = cv2.imdecode(buffer, flags) if buffer.size else None
    if image is not None and image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image is not None and image.dtype != np.uint8:  # a float TIFF, read through IMREAD_ANYDEPTH
        image = None
    if image is None:
        raw = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
        if raw is not None:  # a valid file of samples the 8-bit readers refuse (a float32 TIFF)
            channels = 1 if raw.ndim == 2 else raw.shape[2]
            raise UserError(f"{name}: an image of {raw.dtype} samples ({channels} channel(s)); images are "
                            f"read as 8-bit (16-bit integers reduced to 8): save it with unsigned 8- or "
                            f"16-bit integer samples")
        raise UserError(f"{name}: not a readable image (corrupt, or not {ACCEPTED_FORMATS})")
    if image.ndim == 2:
        return image[:, :, None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, *, keep_grey: bool = False) -> np.ndarray:
    """Read an image file as uint8 (see :func:`decode_image`); a missing or corrupt file is a UserError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: image not found") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read image ({error.strerror})") from None
    return decode_image(data, str(path), keep_grey=keep_grey)


def encode_image(image: np.ndarray, fmt: str = "jpg") -> bytes:
    """Encode RGB ``(H, W, 3)`` or grey ``(H, W)`` / ``(H, W, 1)`` uint8 as OpenCV does by default.

    JPEG quality 95 or lossless PNG (docs/BENCHMARK.md §2.8). A grey image stays a one-channel file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'jpg' or 'png', got {fmt!r}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim != 2:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W[, 1]) grey image, got shape {image.shape}")
    ok, buffer = cv2.imencode("." + fmt, image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {fmt}")
    return buffer.tobytes()
