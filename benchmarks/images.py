"""Image path benchmark: mmr1's resize-once path against per-call resizing, and how often a tiny GRPO run
decodes/resizes each unique image.

    python benchmarks/images.py                 # both parts
    python benchmarks/images.py --skip-train    # throughput only

Part 1 times, on the same encoded images: mmr1's build path (decode, RGB, smart_resize, PNG encode; once
per unique image), mmr1's access path (what each of the num_generations requests of a prompt costs),
``qwen_vl_utils.fetch_image`` (if installed) and the bare HF ``Qwen2VLImageProcessor`` (what TRL runs for
every generation and forward pass), the latter also on mmr1's pre-resized images.
Part 2 runs ``mmr1.train.train`` for 2 GRPO steps with num_generations 4 on the tiny model and counts,
per unique image, mmr1's decode+resize operations (target: 1) and the HF image processor's calls.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mmr1.data.images import WORK, DecodedImageCache, ImageResizer, PixelLimits  # noqa: E402 (after the path)

SIZES = [(640, 480), (1024, 768), (1600, 1200), (300, 200), (2048, 1536), (800, 800)]


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """Figure-like images (white, coloured shapes, text) at the sizes real datasets carry, PNG and JPEG."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        img = Image.new("RGB", (w, h), "white")
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randrange(w), rng.randrange(h)
            r = rng.randint(10, max(11, w // 8))
            d.ellipse((x - r, y - r, x + r, y + r), outline=tuple(rng.randrange(256) for _ in range(3)), width=3)
            d.text((x, y), f"{rng.randint(0, 999)}", fill="black")
        buf = io.BytesIO()
        img.save(buf, format="PNG" if i % 2 else "JPEG")
        out.append(buf.getvalue())
    return out


def rate(fn, items, reps: int) -> float:
    """Images per second, best of ``reps`` passes (the machine is shared)."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for x in items:
            fn(x)
        times.append(time.perf_counter() - t)
    return len(items) / min(times)


def throughput(n: int, min_pixels: int, max_pixels: int, reps: int, generations: int) -> None:
    images = make_images(n)
    limits = PixelLimits(min_pixels, max_pixels)
    def decode(b: bytes) -> Image.Image:
        return Image.open(io.BytesIO(b)).convert("RGB")
    rows: list[tuple[str, float]] = []

    fresh = rate(lambda b: ImageResizer(limits)(b), images, reps)
    rows.append(("mmr1 build: decode+RGB+smart_resize+PNG, once/image", fresh))
    resizer = ImageResizer(limits)
    stored = [resizer(b) for b in images]

    def access(r):  # one prompt's num_generations requests through a cold LRU: 1 PNG decode + hits
        cache = DecodedImageCache(2**30)
        for _ in range(generations):
            cache.get(r["id"], r["bytes"])

    rows.append((f"mmr1 access: {generations} requests of a prompt (1 decode)", rate(access, stored, reps)))

    try:
        from qwen_vl_utils import fetch_image

        rows.append(("qwen_vl_utils.fetch_image (decode+resize)", rate(
            lambda b: fetch_image({"image": decode(b), "min_pixels": min_pixels, "max_pixels": max_pixels}),
            images, reps)))
    except ImportError:
        rows.append(("qwen_vl_utils.fetch_image: not installed", float("nan")))

    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    rows.append(("HF Qwen2VLImageProcessor (decode+resize+normalize)", rate(
        lambda b: proc(images=[decode(b)], return_tensors="pt"), images, reps)))
    resized = [Image.open(io.BytesIO(r["bytes"])).convert("RGB") for r in stored]
    rows.append(("HF Qwen2VLImageProcessor on mmr1-resized images", rate(
        lambda im: proc(images=[im], return_tensors="pt"), resized, reps)))

    print(f"# part 1: {n} images ({', '.join(f'{w}x{h}' for w, h in SIZES)}; PNG/JPEG), "
          f"min_pixels={min_pixels} max_pixels={max_pixels}, best of {reps}")
    print(f"{'path':<58} {'images/s':>9} {'ms/image':>9}")
    for name, r in rows:
        print(f"{name:<58} {r:>9.1f} {1000 / r:>9.2f}")
    by = dict(rows)
    g = generations
    per_prompt_mmr1 = 1000 / rows[0][1] + 1000 / rows[1][1]
    fetch = by.get("qwen_vl_utils.fetch_image (decode+resize)")
    if fetch:
        print(f"per prompt over {g} generations: mmr1 {per_prompt_mmr1:.1f} ms (resize once + {g} requests) vs "
              f"fetch_image per generation {g * 1000 / fetch:.1f} ms")
    sizes = [r["size_after"] for r in stored]
    print(f"resized sizes: {sorted(set(sizes))}")


def count_processor_calls() -> Counter:
    """Count images passing through Qwen2VLImageProcessor during the run (TRL's own processing)."""
    import hashlib

    from transformers import Qwen2VLImageProcessor

    seen: Counter = Counter()
    original = Qwen2VLImageProcessor.__call__

    def counting(self, images=None, *args, **kwargs):
        flat = images if isinstance(images, list) else [images]
        for im in flat:
            for one in im if isinstance(im, list) else [im]:
                if isinstance(one, Image.Image):
                    seen[hashlib.blake2b(one.tobytes(), digest_size=8).hexdigest()] += 1
        return original(self, images, *args, **kwargs)

    Qwen2VLImageProcessor.__call__ = counting
    return seen


def train_counts(steps: int, generations: int) -> None:
    from hydra import compose, initialize_config_dir

    from mmr1.train import CONF_DIR, train

    per_step_prompts = 2
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            "model.warmstart.enabled=false", "dataset.num_samples=16", "dataset.eval_size=0",
            f"trainer.per_device_train_batch_size={per_step_prompts * generations}",
            f"trainer.num_generations={generations}", "trainer.max_completion_length=8",
            f"trainer.max_steps={steps}", "trainer.save_steps=1000", "trainer.eval_strategy=no",
            "trainer.dataloader_num_workers=0", f"run_dir={run_dir}",
        ]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        for c in WORK.values():
            c.clear()
        proc_seen = count_processor_calls()
        t = time.perf_counter()
        train(cfg)
        elapsed = time.perf_counter() - t
    resize, decode = WORK["resize"], WORK["decode"]
    print(f"\n# part 2: mmr1.train.train, {steps} GRPO steps, num_generations={generations}, "
          f"{per_step_prompts} prompts/step, tiny model ({elapsed:.1f} s)")
    print(f"unique images built: {len(resize)}; mmr1 decode+resize per unique image: "
          f"{dict(Counter(resize.values()))} (count: images)")
    print(f"mmr1 re-decodes at access (LRU misses): {sum(decode.values())}")
    if proc_seen:
        print(f"HF image processor calls per image seen by TRL: {dict(Counter(proc_seen.values()))} (count: images), "
              f"median {statistics.median(proc_seen.values())}: TRL re-processes (normalises) per generation/forward, "
              "but on mmr1's already-sized pixels its resize is the identity")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--min-pixels", type=int, default=3136)
    ap.add_argument("--max-pixels", type=int, default=401408, help="the seed's GeoQA MAX_PIXELS")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    throughput(args.n, args.min_pixels, args.max_pixels, args.reps, args.generations)
    if not args.skip_train:
        train_counts(steps=2, generations=4)


if __name__ == "__main__":
    main()
