"""What the gallery accepts from a visitor, checked before anything is decoded.

    upload (HTTP)  --gradio max_file_size-->  temp file  --check_* here (header only)-->  decode in the tab
                                                  |
                                                  +-- deleted by gradio's delete_cache after CACHE_MAX_AGE_SECONDS

Gradio refuses an upload above MAX_UPLOAD_BYTES while it streams in; the checks below repeat the size
test on the file a handler receives (a file fetched from a URL by the API path never went through the
upload route). Images are measured from the file header: PIL's `Image.open` reads only the header, the
pixels are decoded on `load()`/`convert()`, so an oversized image costs nothing before it is refused.
Audio length is read from the header by zoo.multimodal.audio.load_audio (the Uni-MoE tab's 30 s).
Every check raises ValueError with the limit in the message; the tabs turn it into a gr.Error.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

MAX_UPLOAD_MB = 32
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # MiB, as gradio counts "32mb"
MAX_IMAGE_PIXELS = 4096 * 4096  # question tabs: the towers see 64-224 px anyway
MAX_VIDEO_PIXELS = 64_000_000  # all frames of a GIF together (decoded frames are kept in memory)
# uploads and the files the tabs hand back live in gradio's cache: swept every CACHE_SWEEP_SECONDS,
# deleted once older than CACHE_MAX_AGE_SECONDS (an hour leaves time to ask several questions about
# one upload), and all of them when the server stops
CACHE_SWEEP_SECONDS = 600
CACHE_MAX_AGE_SECONDS = 3600


def limits_markdown(max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """The limits as a tab states them."""
    return (f"Limits: uploads up to {MAX_UPLOAD_MB} MB, images up to {max_pixels / 1e6:.1f} MP "
            f"(e.g. {_square(max_pixels)} px); uploads are deleted {CACHE_MAX_AGE_SECONDS // 60} minutes "
            "after they arrive.")


def _square(pixels: int) -> str:
    side = int(pixels ** 0.5)
    return f"{side}x{side}"


def is_file(value) -> bool:
    """An upload as the tabs get it (a path). Arrays and PIL images come from Python callers that decoded them."""
    return isinstance(value, (str, os.PathLike))


def check_file_size(path: str | os.PathLike, what: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} {file.name!r}: the uploaded file is gone (uploads are deleted after "
                         f"{CACHE_MAX_AGE_SECONDS // 60} minutes); upload it again")
    size = file.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{what} {file.name!r} is {size / 2**20:.1f} MB, above the gallery's upload limit of "
                         f"{MAX_UPLOAD_MB} MB; refused")


def _open_header(path: str | os.PathLike, what: str, expected: str = "an image PIL can read") -> Image.Image:
    """The image with only its header read. PIL's own bomb guard (a warning above its MAX_IMAGE_PIXELS,
    an error above twice that) is silenced here: the caller compares the size with its own limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{what} {Path(path).name!r} is far above the gallery's limit ({error}); refused") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{what} {Path(path).name!r} is not {expected} ({error})") from None


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, above this tab's limit of "
                         f"{max_pixels / 1e6:.1f} MP ({_square(max_pixels)} px); downscale it first")


def check_image_file(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file within the limits; nothing is decoded."""
    check_file_size(path, what)
    with _open_header(path, what) as image:
        width, height = image.size
    _check_pixels(width, height, max_pixels, what)
    return width, height


def check_gif_file(path: str | os.PathLike, max_frames: int, max_pixels: int = MAX_VIDEO_PIXELS,
                   what: str = "video") -> int:
    """Number of frames of an animated GIF within the limits. The frame size comes from the header; frames
    are counted by seeking one at a time (PIL holds one frame), stopping as soon as a limit is passed."""
    check_file_size(path, what)
    with _open_header(path, what, "a readable animated GIF") as clip:
        width, height = clip.size
        _check_pixels(width, height, max_pixels, f"{what} frame")
        allowed = min(max_frames, max_pixels // (width * height))
        count = 0
        for count, _ in enumerate(ImageSequence.Iterator(clip), start=1):
            if count > allowed:
                raise ValueError(f"{what} has more than {allowed} frames of {width}x{height}; the limit is {max_frames} "
                                 f"frames and {max_pixels / 1e6:.0f} MP over all frames; refused")
    return count
