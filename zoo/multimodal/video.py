"""Videos as a few sampled frames through an image tower, mean-pooled over the frames (Uni-MoE v1).

    video: [T, H, W, 3] uint8 array | list of frames (PIL, path, bytes, arrays) | an animated GIF (path, bytes)
        --check limits (frames, seconds at `fps`) before anything is decoded or resized-->
        --sample_frame_indices: F frames spread evenly over the clip-->  F images
        --image preprocessing (zoo.multimodal.processing)-->           pixel_values_videos [n_videos, F, 3, S, S]
    model: frames [n * F, 3, S, S] --image tower + connector--> [n * F, N, H]
        --mean_pool_frames--> [n, N, H]    one token grid per video, N = an image's token count

Pooling keeps a video as cheap as one image in the LLM (Uni-MoE v1: 8 frames, 576 tokens per video);
the order of events is lost, which is the recipe's trade-off. Video files (mp4, ...) are not decoded
here (no video decoder is installed): decode them to frames first; animated GIFs are read with PIL.
Limits: `max_frames` refuses a clip with more input frames, `max_seconds` one longer than that at its
`fps` (only known when given): an oversized upload fails before any frame is resized.
"""
from __future__ import annotations

import io
import os
import pathlib
import numpy as np
import torch
from PIL import Image, ImageSequence

DEFAULT_NUM_FRAMES = 8  # Uni-MoE v1
DEFAULT_MAX_FRAMES = 18_000  # 10 minutes at 30 fps
DEFAULT_MAX_SECONDS = 600.0
VIDEO_TOKEN = "<video>"


def sample_frame_indices(num_input_frames: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over a clip of `num_input_frames`: the centre of each of
    `num_frames` equal segments (a clip shorter than that repeats frames, in order)."""
    if num_input_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_input_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames}")
    return [min(num_input_frames - 1, int((i + 0.5) * num_input_frames / num_frames)) for i in range(num_frames)]


def _gif_frames(video) -> list[Image.Image]:
    data = pathlib.Path(video).read_bytes() if isinstance(video, (str, os.PathLike)) else bytes(video)
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001  (PIL raises several kinds for non-images)
        raise ValueError("the video is neither a frame sequence nor an animated image PIL can read (decode video "
                         "files such as mp4 to frames first)") from None
    return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]


def video_frames(video, *, fps: float | None = None, max_frames: int | None = DEFAULT_MAX_FRAMES,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS, what: str = "video") -> list:
    """A video in any accepted form -> its frames (a list, or a [T, H, W, 3] array), limits checked first."""
    if isinstance(video, (str, os.PathLike)):
        if not pathlib.Path(video).is_file():
            raise ValueError(f"{what}: file {str(video)!r} does not exist")
        frames = _gif_frames(video)
    elif isinstance(video, (bytes, bytearray)):
        frames = _gif_frames(video)
    elif isinstance(video, torch.Tensor):
        frames = video.detach().cpu().numpy()
    elif isinstance(video, np.ndarray) or isinstance(video, (list, tuple)):
        frames = video
    else:
        raise ValueError(f"{what}: expected a [T, H, W, 3] uint8 array, a list of frames or an animated GIF, "
                         f"got {type(video).__name__}")
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.dtype != np.uint8):
        raise ValueError(f"{what}: a video array must be [frames, height, width, 3] uint8, got shape "
                         f"{frames.shape} dtype {frames.dtype}")
    count = len(frames)
    if count == 0:
        raise ValueError(f"{what} has no frames")
    if max_frames is not None and count > max_frames:
        raise ValueError(f"{what} has {count} frames, more than the maximum of {max_frames} (max_video_frames); refused")
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"{what}: fps must be positive, got {fps!r}")
        if max_seconds is not None and count / fps > max_seconds:
            raise ValueError(f"{what} is {count / fps:.1f} s long at {fps:g} fps, more than the maximum of "
                             f"{max_seconds:g} s (max_video_seconds); refused")
    return frames


def sample_frames(video, num_frames: int = DEFAULT_NUM_FRAMES, **limits) -> list:
    """video_frames, then the `num_frames` evenly spread frames (each still in its input form)."""
    frames = video_frames(video, **limits)
    return [frames[i] for i in sample_frame_indices(len(frames), num_frames)]


def mean_pool_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[n * F, N, H] (frames of each video consecutive) -> [n, N, H], the mean over each video's F frames."""
    if features.dim() != 3 or features.shape[0] % num_frames:
        raise ValueError(f"frame features must be [n_videos * {num_frames} frames, tokens, hidden], "
                         f"got {tuple(features.shape)}")
    return features.view(-1, num_frames, *features.shape[1:]).mean(dim=1)


def flatten_video_pixels(pixel_values_videos: torch.Tensor, max_frames: int | None = None) -> tuple[torch.Tensor, int]:
    """[n, F, 3, S, S] -> ([n * F, 3, S, S], F): the frames as an image batch, video by video."""
    if pixel_values_videos.dim() != 5 or pixel_values_videos.shape[2] != 3:
        raise ValueError(f"pixel_values_videos must be [videos, frames, 3, height, width], "
                         f"got {tuple(pixel_values_videos.shape)}")
    frames = pixel_values_videos.shape[1]
    if frames < 1 or (max_frames is not None and frames > max_frames):
        raise ValueError(f"pixel_values_videos has {frames} frames per video; the model takes 1 to {max_frames} "
                         "(config.max_video_frames)")
    return pixel_values_videos.flatten(0, 1), frames


__all__ = ["DEFAULT_MAX_FRAMES", "DEFAULT_MAX_SECONDS", "DEFAULT_NUM_FRAMES", "VIDEO_TOKEN", "flatten_video_pixels",
           "mean_pool_frames", "sample_frame_indices", "sample_frames", "video_frames"]
