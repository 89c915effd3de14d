"""One image resolution for trainer and rollout: decode, check, convert and resize each unique image once.

TRL has no max_pixels setting (TRL issue 6401): the trainer's processor and the vLLM engine each
resize with their own limits and can disagree. mmr1 resizes every image itself with Qwen's
``smart_resize`` rule before TRL sees it, so both sides get the same pixels (their own resize then
is a no-op), and counts the work so a benchmark can check it happens once per unique image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

FACTOR = 28  # Qwen2.5-VL: 14-px patches merged 2x2, so one image token per 28x28 block
# Qwen2.5-VL-*-Instruct preprocessor_config.json values, also qwen_vl_utils' MIN/MAX_PIXELS, which the
# seed's MAX_PIXELS env var overrides. (transformers' Qwen2VLImageProcessor class default max is 28*28*1280;
# the hub checkpoints override it, so a loaded processor's own values should be passed when known.)
QWEN_MIN_PIXELS = 56 * 56  # 3136
QWEN_MAX_PIXELS = 28 * 28 * 16384  # 12845056
MAX_ASPECT = 200  # Qwen's smart_resize refuses more extreme aspect ratios
MIN_SIDE = 2  # a 1-px-wide image carries nothing; it is bad data, not something to upscale


# Process-wide work counters keyed by image id (content hash), read by benchmarks/images.py after a
# run: "resize" = decode + RGB + smart_resize of a source image, "decode" = stored image bytes decoded again
# at access (LRU miss). Dataloader worker processes keep their own copies.
WORK: dict[str, Counter[str]] = {"resize": Counter(), "decode": Counter()}


class BadImage(ValueError):
    """The image cannot be used (corrupt, missing, degenerate, too large); carries a reason."""


class PixelLimits(NamedTuple):
    min_pixels: int
    max_pixels: int


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen's rule, transformers' own (models/qwen2_vl/image_processing_qwen2_vl.py ``smart_resize``, what
    Qwen2VLImageProcessor.resize calls): sides multiples of ``factor``, pixel count within
    [min_pixels, max_pixels], aspect ratio kept as closely as possible. mmr1's defaults are the hub
    checkpoints' limits, not the library's class defaults; an aspect ratio over 200 is a BadImage.

    >>> smart_resize(84, 84)
    (84, 84)
    >>> smart_resize(1000, 2000, max_pixels=262144)
    (336, 700)
    """
    # Checked here: the library raises a plain ValueError for it, and a bad image must say it is one.
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise BadImage(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT}")
    # Imported on first use: the module imports torch, which the dry run (it imports this one) never needs.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as qwen_smart_resize

    return qwen_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def _env_int(name: str, env: Any) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer pixel count") from None


def resolve_pixel_limits(
    model_max: int | None, model_min: int | None, *, default_max: int = QWEN_MAX_PIXELS,
    default_min: int = QWEN_MIN_PIXELS, env: Any = None,
) -> PixelLimits:
    """The image pixel bounds for the whole run: config key, else env ``MAX_PIXELS``/``MIN_PIXELS``
    (as the seed sets them), else the processor's defaults. Config wins over env, with a warning.

    >>> resolve_pixel_limits(None, None, env={"MAX_PIXELS": "262144"})
    PixelLimits(min_pixels=3136, max_pixels=262144)
    """
    env = os.environ if env is None else env
    out = {}
    for key, cfg_val, default in (("MAX_PIXELS", model_max, default_max), ("MIN_PIXELS", model_min, default_min)):
        env_val = _env_int(key, env)
        if cfg_val is not None and env_val is not None:
            warnings.warn(
                f"both model.{key.lower()}={cfg_val} and env {key}={env_val} are set; using the config value"
                + ("" if cfg_val == env_val else f" ({cfg_val}, not {env_val})"),
                stacklevel=2,
            )
        value = cfg_val if cfg_val is not None else env_val if env_val is not None else default
        if value < FACTOR * FACTOR:
            raise ValueError(f"{key.lower()}={value} is below one image token ({FACTOR * FACTOR} pixels)")
        out[key] = int(value)
    if out["MIN_PIXELS"] > out["MAX_PIXELS"]:
        raise ValueError(f"min_pixels={out['MIN_PIXELS']} exceeds max_pixels={out['MAX_PIXELS']}")
    return PixelLimits(min_pixels=out["MIN_PIXELS"], max_pixels=out["MAX_PIXELS"])


def image_tokens(width: int, height: int) -> int:
    """What an already-resized image costs the language model: one token per 28x28 block."""
    return (width // FACTOR) * (height // FACTOR)


def _source_bytes(value: Any, base_dir: str | Path | None) -> tuple[bytes | None, Image.Image | None, str]:
    """Normalise an image cell (PIL, {bytes, path} dict, path, raw bytes) to (bytes, pil, description)."""
    if isinstance(value, Image.Image):
        return None, value, "PIL image"
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], None, f"bytes of {value.get('path') or 'image'}"
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None, "bytes"
    if isinstance(value, (str, os.PathLike)) and str(value):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        try:
            return path.read_bytes(), None, str(path)
        except OSError as exc:
            raise BadImage(f"cannot read image file {path}: {exc.strerror or exc}") from None
    raise BadImage(f"no image (got {type(value).__name__})")


def source_bytes(value: Any, base_dir: str | Path | None = None) -> bytes:
    """An image cell's encoded source (a PIL image encoded as PNG): what a tool crops at full resolution."""
    raw, pil, _ = _source_bytes(value, base_dir)
    if raw is not None:
        return raw
    assert pil is not None  # _source_bytes gives bytes or a PIL image
    buf = io.BytesIO()
    pil.convert("RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class ImageResizer:
    """Decode + check + RGB + smart_resize, once per unique image content; counts the work.

    ``counts`` (a Counter keyed by image id) is what the benchmark reads: after a build, every value
    is 1. Results are encoded bytes: the source's own when nothing changed, else lossless PNG, so every
    later decode yields exactly the pixels computed here.
    """

    def __init__(self, limits: PixelLimits) -> None:
        self.limits = limits
        self.counts: Counter[str] = Counter()  # decode+resize operations per image id
        self._done: dict[str, tuple[bytes, tuple[int, int], tuple[int, int]]] = {}

    def __call__(self, value: Any, base_dir: str | Path | None = None) -> dict[str, Any]:
        raw, pil, where = _source_bytes(value, base_dir)
        if raw is not None:
            key = hashlib.blake2b(raw, digest_size=16).hexdigest()
        else:
            assert pil is not None  # _source_bytes gives bytes or a PIL image
            h = hashlib.blake2b(digest_size=16)
            h.update(f"{pil.mode}{pil.size}".encode())
            h.update(pil.tobytes())
            key = h.hexdigest()
        fresh = None
        if key not in self._done:
            encoded, before, after, fresh = self._process(raw, pil, where)
            self._done[key] = (encoded, before, after)
            self.counts[key] += 1
            WORK["resize"][key] += 1
        encoded, before, after = self._done[key]
        # "pil" only on first sight, so the caller can seed the decoded-image cache without this
        # object holding every decoded image of the dataset.
        return {"id": key, "bytes": encoded, "size_before": before, "size_after": after, "pil": fresh}

    def _process(
        self, raw: bytes | None, pil: Image.Image | None, where: str
    ) -> tuple[bytes, tuple[int, int], tuple[int, int], Image.Image]:
        try:
            with warnings.catch_warnings():
                # PIL warns between 89M and 179M pixels and raises above; both are our "too large" case.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = pil if pil is not None else Image.open(io.BytesIO(raw or b""))
                w, h = img.size
                if min(w, h) < MIN_SIDE:
                    raise BadImage(f"degenerate image {w}x{h} ({where})")
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"image too large to decode safely ({where}): {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, BadImage):
                raise
            raise BadImage(f"corrupt image ({where}): {exc}") from None
        unchanged = img.mode == "RGB"
        # Grayscale, palette, CMYK and alpha images all become RGB by PIL's convert, alpha dropped (not
        # composited), exactly as the seed's ms-swift v3.2.1 loads images (swift/llm/template/vision_utils.py
        # :131-137 `if image.mode != 'RGB': image = image.convert('RGB')`), so the policy sees the seed's pixels.
        if img.mode != "RGB":
            img = img.convert("RGB")
        new_h, new_w = smart_resize(h, w, min_pixels=self.limits.min_pixels, max_pixels=self.limits.max_pixels)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)  # Qwen's processor resamples bicubic
            unchanged = False
        if unchanged and raw is not None:
            return raw, (w, h), (w, h), img  # already RGB at a valid size: keep the source bytes, skip an encode
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)  # lossless and fast; size matters less than build time
        return buf.getvalue(), (w, h), (new_w, new_h), img

    def release(self) -> None:
        """Drop cached encoded bytes after a build (the counts stay)."""
        self._done.clear()


class ByteLRU:
    """A least-recently-used map bounded by the bytes of its values (``size_of(value)``); a value larger than the
    bound is not kept. The decoded images and the decoded clips of a dataset each keep one."""

    def __init__(self, max_bytes: int, size_of: Any) -> None:
        self.max_bytes, self.size_of = max_bytes, size_of
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        if key in self._items:
            self._items.move_to_end(key)
            return
        size = self.size_of(value)
        if size > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= self.size_of(old)


class DecodedImageCache:
    """``Dataset.with_transform`` hook: turns the stored resized image bytes back into a PIL image, keeping a
    bounded LRU (by decoded bytes) keyed by image id, so the ``num_generations`` repeats of a prompt
    that TRL's sampler requests back to back cost one decode. ``decodes`` counts real decodes."""

    def __init__(self, max_bytes: int, clips: Any = None) -> None:
        self.clips = clips  # a dataset's clips (mmr1.data.videos.ClipStore), decoded as Clip objects
        self._lru = ByteLRU(max_bytes, lambda img: img.width * img.height * 3)
        self.decodes: Counter[str] = Counter()

    def put(self, key: str, img: Image.Image) -> None:
        self._lru.put(key, img)

    def get(self, key: str, encoded: bytes) -> Image.Image:
        img = self._lru.get(key)
        if img is not None:
            return img
        img = Image.open(io.BytesIO(encoded))
        img.load()
        self.decodes[key] += 1
        WORK["decode"][key] += 1
        self.put(key, img)
        return img

    def _decode(self, key: str | None, cell: dict | None) -> Image.Image | None:
        return None if cell is None else self.get(key or hashlib.blake2b(cell["bytes"]).hexdigest(), cell["bytes"])

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "image" in batch:
            ids = batch.get("image_id") or [None] * len(batch["image"])
            batch["image"] = [self._decode(key, cell) for key, cell in zip(ids, batch["image"], strict=True)]
        if "images" in batch:  # several images per row (mmr1.data.datasets): one LRU for all of them
            id_lists = batch.get("image_ids") or [[None] * len(cells) for cells in batch["images"]]
            batch["images"] = [[self._decode(key, cell) for key, cell in zip(keys, cells, strict=True)]
                               for keys, cells in zip(id_lists, batch["images"], strict=True)]
        if "videos" in batch and self.clips is not None:
            batch["videos"] = [[self.clips.get(key, cell) for key, cell in zip(keys, cells, strict=True)]
                               for keys, cells in zip(batch["video_ids"], batch["videos"], strict=True)]
        return batch
