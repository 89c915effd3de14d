"""Clips as Qwen2.5-VL's reference turns them into frames: which frames, at what size, and what they cost in tokens.

The rule is qwen-vl-utils' (``smart_nframes`` and ``fetch_video`` in ``qwen_vl_utils/vision_process.py``, settings
and citations in mmr1.data.config.VideoConfig): sample ``fps`` frames per second (at least ``min_frames``, at most
``max_frames``, an even count: the temporal patch holds two frames), evenly spaced (``linspace``, rounded), then
resize every frame to one size, multiples of 28, within ``min_pixels`` and the clip's share of ``total_pixels``.
A list of frame images is taken as frames already sampled at ``fps`` (qwen-vl-utils 0.0.14's reading: stacked,
padded to an even count with the last frame, and resized with the same budget).

Decoder: PyAV (``av``). One self-contained wheel with FFmpeg inside, so a bare machine needs no system FFmpeg (this
one has none); it is transformers' default in ``video_utils.load_video`` and a dependency of qwen-vl-utils itself.
torchvision removed its video reader in 0.26, torchcodec needs a system FFmpeg, decord's last release is from 2021.

The processor then leaves the frames as they are (their size is already within its bounds, given per call as
``videos_kwargs={"size": ...}``: transformers' processor-level ``min_pixels``/``max_pixels`` are the image limits
and leak into video), so ``video_tokens`` is exactly what it will count: ``t/2 * h/14 * w/14 / 2**2``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmr1.data.config import VideoConfig
from mmr1.data.images import FACTOR, ByteLRU, smart_resize

TEMPORAL_PATCH = 2  # FRAME_FACTOR: frames per temporal patch
PATCH = 14
MERGE = 2


class BadVideo(ValueError):
    """A clip that cannot be used (missing, unreadable, no video stream, too few frames); carries a reason."""


@dataclass
class Clip:
    """A clip's sampled, resized frames ``(T, H, W, 3)`` uint8, and what the processor needs to place them in time:
    ``fps`` of the sampled frames (``second_per_grid_ts`` = 2 / fps) and the metadata transformers reads."""

    frames: np.ndarray
    fps: float
    source_fps: float
    total_frames: int
    indices: list[int]

    @property
    def metadata(self) -> dict[str, Any]:
        """transformers' ``VideoMetadata`` fields: ``sampled_fps`` = len(indices) / total_frames * fps."""
        return {"fps": self.source_fps, "total_num_frames": self.total_frames, "frames_indices": self.indices}

    @property
    def tokens(self) -> int:
        t, h, w = self.frames.shape[:3]
        return video_tokens(t, h, w)


def video_tokens(frames: int, height: int, width: int) -> int:
    """Tokens of a clip of ``frames`` frames at ``height`` x ``width`` (multiples of 28): its grid
    (ceil(t/2), h/14, w/14) over the 2x2 merge, as Qwen2_5_VLProcessor.replace_video_token counts.

    >>> video_tokens(4, 56, 84)
    12
    """
    return math.ceil(frames / TEMPORAL_PATCH) * (height // PATCH) * (width // PATCH) // (MERGE * MERGE)


def clip_token_bound(cfg: VideoConfig) -> int:
    """The most tokens one clip can cost under ``cfg``: n frames of at most min(max_pixels, total_pixels * 2 / n)
    pixels each cost n/2 * pixels / 28**2, at most min(max_frames * max_pixels / 2, total_pixels) / 28**2.

    >>> clip_token_bound(VideoConfig())  # Qwen's defaults: the clip budget binds
    115200
    """
    return int(min(cfg.max_frames * cfg.max_pixels / TEMPORAL_PATCH, cfg.total_pixels)) // (FACTOR * FACTOR)


def _floor2(x: float) -> int:
    return int(math.floor(x / TEMPORAL_PATCH) * TEMPORAL_PATCH)


def sample_count(total_frames: int, video_fps: float, cfg: VideoConfig) -> int:
    """qwen-vl-utils' ``smart_nframes`` (vision_process.py:143-180): ``fps`` per second within [min, max] frames,
    at most the clip's own, floored to an even count."""
    min_frames = math.ceil(cfg.min_frames / TEMPORAL_PATCH) * TEMPORAL_PATCH
    max_frames = _floor2(min(cfg.max_frames, total_frames))
    n = total_frames / video_fps * cfg.fps if video_fps > 0 else total_frames
    n = _floor2(min(min(max(n, min_frames), max_frames), total_frames))
    if not TEMPORAL_PATCH <= n <= total_frames:
        raise BadVideo(f"{total_frames} frames: a clip needs at least {TEMPORAL_PATCH}")
    return n


def frame_size(height: int, width: int, frames: int, cfg: VideoConfig) -> tuple[int, int]:
    """One size for every frame (``fetch_video``, vision_process.py:286-304): at least ``min_pixels``, at most
    ``max_pixels`` and the frame's share of the clip budget, ``total_pixels / frames * 2``."""
    budget = max(min(cfg.max_pixels, cfg.total_pixels / frames * TEMPORAL_PATCH), int(cfg.min_pixels * 1.05))
    return smart_resize(height, width, factor=FACTOR, min_pixels=cfg.min_pixels, max_pixels=int(budget))


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic with antialiasing, as ``fetch_video`` resizes (torchvision), back to uint8 as ms-swift keeps it."""
    if frames.shape[1:3] == size:
        return frames
    import torch
    from torchvision.transforms.functional import InterpolationMode, resize

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    out = resize(video, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def read_clip(path: str | Path, cfg: VideoConfig) -> Clip:
    """Decode a clip file with PyAV, keep the sampled frames only; BadVideo names what is wrong with it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise BadVideo(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadVideo(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else cfg.fps
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.FFmpegError as exc:
        raise BadVideo(f"{path}: unreadable ({exc})") from None
    return _sampled(np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps, cfg, str(path))


def frames_clip(frames: list[Any], cfg: VideoConfig, where: str = "frames") -> Clip:
    """A clip given as frame images (PIL, bytes, ``{"bytes", "path"}`` dicts or paths), taken as sampled at
    ``cfg.fps``: padded to an even count with the last frame, resized with the clip budget."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for i, f in enumerate(frames):
        try:
            if isinstance(f, dict):
                f = f.get("bytes") or f.get("path")
            img = Image.open(io.BytesIO(f)) if isinstance(f, bytes) else f if hasattr(f, "convert") else Image.open(f)
            arrays.append(np.asarray(img.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise BadVideo(f"{where} frame {i}: unreadable ({exc})") from None
    if not arrays:
        raise BadVideo(f"{where}: no frames")
    if len({a.shape for a in arrays}) > 1:
        raise BadVideo(f"{where}: frames of different sizes {sorted({a.shape[:2] for a in arrays})}")
    if len(arrays) % TEMPORAL_PATCH:
        arrays.append(arrays[-1])
    video = np.stack(arrays)
    size = frame_size(video.shape[1], video.shape[2], len(video), cfg)
    return Clip(_resize(video, size), cfg.fps, cfg.fps, len(video), list(range(len(video))))


def _sampled(video: np.ndarray, fps: float, cfg: VideoConfig, where: str) -> Clip:
    total = len(video)
    try:
        n = sample_count(total, fps, cfg)
    except BadVideo as exc:
        raise BadVideo(f"{where}: {exc}") from None
    idx = np.linspace(0, total - 1, n).round().astype(int).tolist()  # vision_process.py:214, 250
    sampled = video[idx]
    size = frame_size(sampled.shape[1], sampled.shape[2], n, cfg)
    return Clip(_resize(sampled, size), n / max(total, 1e-6) * fps, fps, total, idx)


def load_clip(cell: Any, cfg: VideoConfig, base_dir: Path | None = None) -> Clip:
    """A ``videos`` cell: a file path (relative to ``base_dir``) or a list of frames."""
    if isinstance(cell, (str, Path)):
        path = Path(cell)
        return read_clip(path if path.is_absolute() or base_dir is None else base_dir / path, cfg)
    if isinstance(cell, (list, tuple)):
        return frames_clip(list(cell), cfg)
    raise BadVideo(f"a video is a file path or a list of frames, not {type(cell).__name__}")


def encode_clip(clip: Clip) -> dict[str, Any]:
    """A clip as the dataset stores it (Arrow-friendly): its sampled, resized frames as PNG, and its timing."""
    from PIL import Image

    frames = []
    for f in clip.frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        frames.append(buf.getvalue())
    return {"frames": frames, "fps": clip.fps, "source_fps": clip.source_fps, "total_frames": clip.total_frames,
            "indices": clip.indices}


def decode_clip(cell: dict[str, Any]) -> Clip:
    from PIL import Image

    frames = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in cell["frames"]])
    return Clip(frames, float(cell["fps"]), float(cell["source_fps"]), int(cell["total_frames"]),
                [int(i) for i in cell["indices"]])


def processor_video_kwargs(clips: list[Clip], cfg: VideoConfig) -> dict[str, Any]:
    """What the processor needs beside the frames: the per-frame bounds (so it keeps mmr1's frame size: the
    processor-level min/max_pixels are the image limits) and each clip's timing (without it transformers assumes
    24 fps and ``second_per_grid_ts`` comes out 2/24 instead of 2/fps)."""
    return {"size": {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
            "video_metadata": [c.metadata for c in clips]}


class ClipStore:
    """Each unique clip decoded, sampled, resized and encoded once per build (keyed by content: a path and its
    file's size and mtime, or the frames' bytes); afterwards a bounded LRU of decoded clips serves the dataset's
    transform, so the ``num_generations`` repeats of a prompt cost one decode."""

    def __init__(self, cfg: VideoConfig) -> None:
        self.cfg = cfg
        self.tokens: dict[str, int] = {}  # every unique clip's token cost, by key
        self._loaded: dict[str, dict[str, Any]] = {}  # this build's encoded clips, dropped by release()
        self._lru = ByteLRU(cfg.cache_mb * 2**20, lambda clip: clip.frames.nbytes)
        self.decodes = 0

    @staticmethod
    def key(cell: Any, base_dir: Path | None) -> str:
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        if isinstance(cell, (str, Path)):
            path = Path(cell) if Path(cell).is_absolute() or base_dir is None else Path(base_dir) / cell
            stat = path.stat() if path.is_file() else None
            h.update(f"{path.resolve()}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}".encode())
        else:
            for f in cell if isinstance(cell, (list, tuple)) else [cell]:
                if isinstance(f, dict):
                    f = f.get("bytes") or f.get("path")
                h.update(f if isinstance(f, bytes) else f.tobytes() if hasattr(f, "tobytes") else str(f).encode())
        return h.hexdigest()

    def load(self, cell: Any, base_dir: Path | None) -> dict[str, Any]:
        """``{"id", "cell" (what the dataset stores), "tokens"}`` of a raw ``videos`` cell."""
        key = self.key(cell, base_dir)
        if key not in self._loaded:
            clip = load_clip(cell, self.cfg, base_dir)
            self._lru.put(key, clip)  # first access during training then costs no decode
            self.tokens[key] = clip.tokens
            self._loaded[key] = {"id": key, "cell": encode_clip(clip), "tokens": clip.tokens}
        return self._loaded[key]

    def release(self) -> None:
        """Drop the build's encoded clips (the dataset holds them now; the token counts stay)."""
        self._loaded.clear()

    def get(self, key: str, cell: dict[str, Any]) -> Clip:
        clip = self._lru.get(key)
        if clip is None:
            clip = decode_clip(cell)
            self.decodes += 1
            self._lru.put(key, clip)
        return clip
