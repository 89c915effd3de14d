"""smart_resize, pixel limits (config vs MAX_PIXELS env) and the once-per-image resize path."""

from __future__ import annotations

import itertools

import pytest
from data_fixtures import png_bytes, png_header_only
from PIL import Image

from mmr1.data.images import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    BadImage,
    ImageResizer,
    PixelLimits,
    resolve_pixel_limits,
    smart_resize,
)


def test_smart_resize_is_the_processors_own_resize():
    """mmr1 resizes before TRL so that the processor's resize is a no-op: the sizes must be the processor's.
    Qwen2VLImageProcessor (the class mmr1's models load) reports what it resized to as the patch grid."""
    from transformers import Qwen2VLImageProcessor

    shapes = [(h, w) for h, w in itertools.product((1, 13, 28, 84, 333, 1080), (7, 56, 500, 1920))
              if max(h, w) / min(h, w) <= 200]
    for mn, mx in ((QWEN_MIN_PIXELS, 3136), (QWEN_MIN_PIXELS, 262144), (QWEN_MIN_PIXELS, 401408), (50000, 401408)):
        # A dict of its own: transformers 5.17 (the floor) writes min_pixels= / max_pixels= into the class-level
        # default `size`, which every later processor then starts from.
        processor = Qwen2VLImageProcessor(size={"shortest_edge": mn, "longest_edge": mx})
        images = [Image.new("RGB", (w, h)) for h, w in shapes]
        grids = processor(images=images, return_tensors="pt")["image_grid_thw"].tolist()
        patch = processor.patch_size
        resized = [(gh * patch, gw * patch) for _, gh, gw in grids]
        assert resized == [smart_resize(h, w, min_pixels=mn, max_pixels=mx) for h, w in shapes], (mn, mx)


def test_an_extreme_aspect_ratio_is_a_bad_image():
    with pytest.raises(BadImage, match="aspect ratio 201 exceeds 200"):
        smart_resize(1, 201)
    assert smart_resize(1, 200) == (28, 812)  # 200 is allowed (and upscaled to min_pixels)


@pytest.mark.parametrize("size", [(84, 84), (640, 480), (3000, 2000), (60, 20), (20000, 300)])
@pytest.mark.parametrize("limits", [(3136, 262144), (3136, 100000), (50000, 401408)])
def test_smart_resize_bounds(size, limits):
    w, h = size
    mn, mx = limits
    nh, nw = smart_resize(h, w, min_pixels=mn, max_pixels=mx)
    assert nh % 28 == 0 and nw % 28 == 0
    assert mn <= nh * nw <= mx


def test_processor_defaults_are_qwen2_5_vl_hub_values():
    # Qwen2.5-VL-*-Instruct preprocessor_config.json: min 3136, max 12845056 (qwen_vl_utils agrees).
    # transformers' class default max is smaller (28*28*1280); the hub config overrides it.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    assert QWEN_MIN_PIXELS == 3136 == Qwen2VLImageProcessor.size["shortest_edge"]
    assert QWEN_MAX_PIXELS == 12845056
    assert resolve_pixel_limits(None, None, env={}) == PixelLimits(3136, 12845056)


def test_env_max_pixels_used_when_config_unset():
    assert resolve_pixel_limits(None, None, env={"MAX_PIXELS": "262144"}).max_pixels == 262144
    assert resolve_pixel_limits(None, None, env={"MIN_PIXELS": "6272"}).min_pixels == 6272


def test_config_wins_over_env_with_warning():
    with pytest.warns(UserWarning, match="using the config value"):
        limits = resolve_pixel_limits(100000, None, env={"MAX_PIXELS": "262144"})
    assert limits.max_pixels == 100000


def test_bad_limits_refused():
    with pytest.raises(ValueError, match="not an integer"):
        resolve_pixel_limits(None, None, env={"MAX_PIXELS": "lots"})
    with pytest.raises(ValueError, match="exceeds"):
        resolve_pixel_limits(5000, 6000, env={})


def test_resizer_once_per_unique_content_and_rgb():
    r = ImageResizer(PixelLimits(3136, 100000))
    a = png_bytes((1000, 500))
    for value in (a, {"bytes": a, "path": "x.png"}, a):
        out = r(value)
    assert list(r.counts.values()) == [1]
    assert out["size_before"] == (1000, 500) and out["size_after"][0] * out["size_after"][1] <= 100000
    for mode in ("L", "P", "RGBA", "LA", "CMYK"):
        res = r(Image.new(mode, (60, 60)))
        assert Image.open(__import__("io").BytesIO(res["bytes"])).mode == "RGB"


@pytest.mark.parametrize(
    "value,match",
    [
        (b"not an image at all", "corrupt"),
        (png_bytes((64, 64))[:60], "corrupt"),  # truncated file
        (png_header_only(20000, 20000), "too large"),  # decompression bomb: refused, not decoded
        (png_header_only(0, 50), "corrupt|degenerate"),
        (png_bytes((1, 1)), "degenerate"),
        ("/nonexistent/img.png", "cannot read"),
        (None, "no image"),
    ],
)
def test_bad_images_raise_badimage(value, match):
    with pytest.raises(BadImage, match=match):
        ImageResizer(PixelLimits(3136, 262144))(value)


def test_alpha_is_dropped_as_the_seed_loaded_images():
    # ms-swift v3.2.1 (swift/llm/template/vision_utils.py:131-137): `if image.mode != 'RGB': image.convert('RGB')`.
    # A transparent red pixel stays red (its colour channels), it is not composited on white or black.
    img = Image.new("RGBA", (56, 56), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    res = ImageResizer(PixelLimits(3136, 12845056))(img)
    out = Image.open(__import__("io").BytesIO(res["bytes"]))
    assert out.mode == "RGB" and out.tobytes() == img.convert("RGB").tobytes()
    assert out.getpixel((1, 1)) == (255, 0, 0) and out.getpixel((0, 0)) == (0, 0, 255)
