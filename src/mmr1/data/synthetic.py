"""Procedural stand-ins for the seed's three datasets: same columns (image, problem, solution), offline,
CPU-sized, deterministic per seed, answers checkable by the seed's ``external_r1v_acc``.

Each generator is ``fn(num_samples, seed, image_size) -> list[dict]`` with PIL images; rows then take
the same path as hub rows (RGB, smart_resize, prompt building), so the synthetic face tests it too.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from mmr1.data.catalog import Registry

GENERATORS: Registry = Registry("synthetic generator")

# Distinct, saturated colours: the tiny model must tell objects apart from the white background.
COLOURS = {
    "red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 160, 50), "orange": (245, 140, 20),
    "purple": (140, 40, 170), "black": (20, 20, 20), "cyan": (20, 180, 200), "brown": (130, 80, 30),
}
CLEVR_PROBLEM = "How many items are there in the image?"  # the ClevrCount dataset's problem text


def _rng(seed: int, index: int) -> random.Random:
    # One stream per row: row i is the same whatever num_samples is, so limit/eval splits stay stable.
    return random.Random(f"mmr1-{seed}-{index}")


@GENERATORS.register("synthetic_count")
def synthetic_count(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """Counting with one object per 28x28 cell (one image token each) on white, 1-3 objects of distinct
    colours, circle or square, radius 8-11, small jitter: the layout a ~1M-parameter Qwen2.5-VL learns
    to count (free placement on a grey floor stayed at chance for hundreds of GRPO steps).

    >>> rows = synthetic_count(2, seed=0)
    >>> rows[0]["image"].size, rows[0]["problem"], rows[0]["solution"] == synthetic_count(1, 0)[0]["solution"]
    ((84, 84), 'How many items are there in the image?', True)
    """
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        k = rng.randint(1, 3)
        rows.append({"image": _grid_scene(rng, image_size or 84, k), "problem": CLEVR_PROBLEM,
                     "solution": f"<answer> {k} </answer>"})
    return rows


def _grid_scene(rng: random.Random, side: int, k: int) -> Image.Image:
    """``k`` objects of distinct colours, one per 28x28 cell, on white (synthetic_count's layout)."""
    cell = 28
    grid = side // cell
    img = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cells = rng.sample(range(grid * grid), k)
    for c, colour in zip(cells, rng.sample(sorted(COLOURS), k), strict=True):
        r = rng.randint(8, 11)
        slack = cell // 2 - r  # jitter that keeps the object inside its cell
        cx = (c % grid) * cell + cell // 2 + rng.randint(-slack, slack)
        cy = (c // grid) * cell + cell // 2 + rng.randint(-slack, slack)
        box = (cx - r, cy - r, cx + r, cy + r)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=COLOURS[colour])
    return img


PAIR_PROBLEM = "How many items are there in the two images together?"


@GENERATORS.register("synthetic_pair_count")
def synthetic_pair_count(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """Two counting scenes per row (``images``, synthetic_count's layout, 1-3 objects each): the answer is
    the total over both, so a model must read every image of its prompt. ClevrCount's solution format.

    >>> row = synthetic_pair_count(1, seed=0)[0]
    >>> len(row["images"]), row["images"][0].size, row["problem"], 2 <= int(row["solution"].split()[1]) <= 6
    (2, (84, 84), 'How many items are there in the two images together?', True)
    """
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        counts = [rng.randint(1, 3), rng.randint(1, 3)]
        rows.append({"images": [_grid_scene(rng, image_size or 84, k) for k in counts], "problem": PAIR_PROBLEM,
                     "solution": f"<answer> {sum(counts)} </answer>"})
    return rows


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str) -> None:
    draw.text(xy, text, fill=(0, 0, 0), anchor="mm")


@GENERATORS.register("synthetic_geoqa")
def synthetic_geoqa(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """Geometry figures with labelled values and a question whose number follows from the figure:
    a triangle's third angle, a right triangle's hypotenuse (Pythagorean triples), a circle's
    diameter from its labelled radius. Solutions are ``<answer> 70° </answer>`` like GEOQA_R1V_Train_8K's
    (spaces inside the tag, degrees kept; R1-V's GeoQA test answers carry units, e.g. "140°")."""
    side = image_size or 168
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        img = Image.new("RGB", (side, side), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        kind = rng.choice(("angle", "hypotenuse", "diameter"))
        m = side * 0.15
        if kind == "angle":
            a, b = rng.randint(30, 80), rng.randint(30, 80)
            pa, pb = (m, side - m), (side - m, side - m)
            # apex from the two base angles, scaled into the canvas
            ta, tb = math.tan(math.radians(a)), math.tan(math.radians(b))
            base = pb[0] - pa[0]
            x = base * tb / (ta + tb)
            h = min(x * ta, side - 2 * m)
            pc = (pa[0] + x, pa[1] - h)
            draw.polygon([pa, pb, pc], outline=(0, 0, 0), width=2)
            _label(draw, (pa[0] + 14, pa[1] - 8), f"{a}°")
            _label(draw, (pb[0] - 14, pb[1] - 8), f"{b}°")
            for p, name in ((pa, "A"), (pb, "B"), (pc, "C")):
                _label(draw, (p[0], p[1] + 8 if name != "C" else p[1] - 8), name)
            problem = "As shown in the figure, in triangle ABC, what is the degree of angle C?"
            answer = f"{180 - a - b}°"
        elif kind == "hypotenuse":
            k = rng.randint(1, 4)
            leg1, leg2, hyp = rng.choice(((3, 4, 5), (5, 12, 13), (8, 15, 17), (6, 8, 10)))
            pa, pb, pc = (m, side - m), (side - m, side - m), (m, m)
            draw.polygon([pa, pb, pc], outline=(0, 0, 0), width=2)
            draw.rectangle((pa[0], pa[1] - 10, pa[0] + 10, pa[1]), outline=(0, 0, 0))  # right-angle mark
            _label(draw, ((pa[0] + pb[0]) / 2, pa[1] + 9), str(leg2 * k))
            _label(draw, (pa[0] - 10, (pa[1] + pc[1]) / 2), str(leg1 * k))
            problem = "As shown in the figure, in the right triangle, what is the length of the hypotenuse?"
            answer = str(hyp * k)
        else:
            radius = rng.randint(2, 30)
            c, rr = side / 2, side / 2 - m
            draw.ellipse((c - rr, c - rr, c + rr, c + rr), outline=(0, 0, 0), width=2)
            draw.line((c, c, c + rr, c), fill=(0, 0, 0), width=2)
            _label(draw, (c + rr / 2, c - 9), str(radius))
            _label(draw, (c - 6, c + 6), "O")
            problem = "As shown in the figure, circle O has the labelled radius. What is the length of its diameter?"
            answer = str(2 * radius)
        # GEOQA_R1V_Train_8K's own format: spaces inside the tag, the unit kept ("<answer> 70° </answer>").
        rows.append({"image": img, "problem": problem, "solution": f"<answer> {answer} </answer>"})
    return rows


CATEGORIES = ("apples", "pears", "plums", "grapes", "lemons", "cherries")


@GENERATORS.register("synthetic_chart")
def synthetic_chart(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """Bar or pie charts (PIL, no matplotlib import cost) with a question answered by a label (which
    category is largest) or a value (how much of a category), like Open R1's charts and maps, with its
    columns: a solution holding the reasoning (``<think>...</think>\n\n<answer>X</answer>``) and
    ``original_question`` / ``original_answer``."""
    side = image_size or 224
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        n = rng.randint(3, 5)
        names = rng.sample(CATEGORIES, n)
        values = rng.sample(range(1, 10), n)  # distinct, so "largest" has one answer
        colours = [COLOURS[c] for c in rng.sample(sorted(COLOURS), n)]
        img = Image.new("RGB", (side, side), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        if rng.random() < 0.5:
            bw, base = side / (n + 1), side - 30
            for j, (name, v, col) in enumerate(zip(names, values, colours, strict=True)):
                x0 = bw * (j + 0.5)
                top = base - v * (base - 20) / 9
                draw.rectangle((x0, top, x0 + bw * 0.8, base), fill=col)
                _label(draw, (x0 + bw * 0.4, top - 7), str(v))
                _label(draw, (x0 + bw * 0.4, base + 10 + 10 * (j % 2)), name)
            kind = "bar chart"
        else:
            total, start, r = sum(values), -90.0, side * 0.3
            c = (side * 0.35, side / 2)
            for j, (name, v, col) in enumerate(zip(names, values, colours, strict=True)):
                end = start + 360 * v / total
                draw.pieslice((c[0] - r, c[1] - r, c[0] + r, c[1] + r), start, end, fill=col)
                start = end
                y = 20 + j * 18
                draw.rectangle((side * 0.72, y - 5, side * 0.72 + 10, y + 5), fill=col)
                draw.text((side * 0.72 + 14, y), f"{name} {v}", fill=(0, 0, 0), anchor="lm")
            kind = "pie chart"
        listing = ", ".join(f"{name} {v}" for name, v in zip(names, values, strict=True))
        if rng.random() < 0.5:
            problem = f"Based on the {kind}, which category has the largest value?"
            answer = names[values.index(max(values))]
            think = f"The {kind} shows {listing}. The largest value is {max(values)}, so the category is {answer}."
        else:
            j = rng.randrange(n)
            problem = f"Based on the {kind}, what is the value of {names[j]}?"
            answer = str(values[j])
            think = f"The {kind} shows {listing}. Reading {names[j]} gives {answer}."
        # multimodal-open-r1-8k-verified's shape (open-r1-multimodal local_scripts/prepare_hf_data.py:43-53,
        # 77-85): the solution carries the reasoning, then the answer; the source question/answer are kept.
        rows.append({
            "image": img, "problem": problem,
            "solution": f"<think>{think}</think>\n\n<answer>{answer}</answer>",
            "original_question": f"According to the question shown in the image, please first perform reasoning, "
                                 f"then finally select the right answer.\nQuestion: {problem}",
            "original_answer": f"{think}\nAnswer: {answer}",
        })
    return rows


CLEVR_SIZE = (480, 320)  # clevr_cogen_a_train's PNGs: 480x320, RGBA (colour type 6)
CLEVR_BACKGROUND = (126, 126, 128, 255)


@GENERATORS.register("clevr_scene")
def clevr_scene(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """ClevrCount's stand-in in the hub's exact shape: ``image`` as ``{bytes, path}`` holding a 480x320
    RGBA PNG named like ``CLEVR_trainA_000000.png``, the dataset's one problem text, and solutions
    ``<answer> N </answer>`` (spaces inside the tag) for 3-10 objects on CLEVR's grey floor. Not
    learnable by the tiny model (that is ``synthetic_count``); it rehearses the real data path.

    >>> row = clevr_scene(1, seed=0)[0]
    >>> from PIL import Image; import io; img = Image.open(io.BytesIO(row["image"]["bytes"]))
    >>> img.size, img.mode, row["image"]["path"], row["solution"].startswith("<answer> ")
    ((480, 320), 'RGBA', 'CLEVR_trainA_000000.png', True)
    """
    import io

    w, h = (image_size, image_size * 2 // 3) if image_size else CLEVR_SIZE
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        k = rng.randint(3, 10)
        img = Image.new("RGBA", (w, h), CLEVR_BACKGROUND)
        draw = ImageDraw.Draw(img)
        for _ in range(k):
            r = rng.randint(h // 20, h // 9)
            cx, cy = rng.randint(r, w - r), rng.randint(h // 3, h - r)
            colour = (*COLOURS[rng.choice(sorted(COLOURS))], 255)
            shape = rng.choice((draw.ellipse, draw.rectangle))
            shape((cx - r, cy - r, cx + r, cy + r), fill=colour)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"CLEVR_trainA_{i:06d}.png"},
                     "problem": CLEVR_PROBLEM, "solution": f"<answer> {k} </answer>"})
    return rows


VIDEO_COUNT_PROBLEM = "How many objects appear in the video?"


@GENERATORS.register("synthetic_video_count")
def synthetic_video_count(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """Objects entering a scene one by one: 4 frames of 56x56 (two temporal patches of 2x2 cells, 4 tokens each at
    the tiny model's video budget), 1-3 objects of distinct colours, each appearing in a later frame and staying,
    so the last frame shows them all and the count needs no memory of earlier frames to be right, but the model
    must read the video, not one image. A row's ``videos`` holds one clip as its list of frames (PNG-ready PIL).

    >>> row = synthetic_video_count(1, seed=0)[0]
    >>> len(row["videos"][0]), row["videos"][0][0].size, row["problem"]
    (4, (56, 56), 'How many objects appear in the video?')
    """
    rows = []
    side = image_size or 56
    for i in range(num_samples):
        rng = _rng(seed, i)
        k = rng.randint(1, 3)
        final = _grid_scene(rng, side, k)
        # Reveal the objects' cells in order over frames 1..3 (frame 0: empty scene).
        cells = [(x, y) for y in range(0, side, 28) for x in range(0, side, 28)]
        shown = [c for c in cells if final.crop((c[0], c[1], c[0] + 28, c[1] + 28)).getextrema() != ((255, 255),) * 3]
        rng.shuffle(shown)
        frames = []
        for t in range(4):
            frame = Image.new("RGB", (side, side), (255, 255, 255))
            for x, y in shown[: math.ceil(len(shown) * t / 3)]:
                frame.paste(final.crop((x, y, x + 28, y + 28)), (x, y))
            frames.append(frame)
        rows.append({"videos": [frames], "problem": VIDEO_COUNT_PROBLEM, "solution": f"<answer> {k} </answer>"})
    return rows


ZOOM_PROBLEM = "How many items are there in the grey frame ({where})?"
ZOOM_GREY = (200, 200, 200)
_ROWS, _COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")


@GENERATORS.register("synthetic_zoom_count")
def synthetic_zoom_count(num_samples: int, seed: int, image_size: int | None = None) -> list[dict]:
    """A task that needs a closer look (``rollout.tools=[crop]``): a 252x252 scene of 3x3 tiles, one of them framed in
    grey and holding synthetic_count's layout (1-3 objects, one per 28x28 cell). Seen at the zoom experiment's 84x84
    (``model.max_pixels=7056``) the grey tile is one image token and its objects 5-7 px specks; cropped from the
    source, it is an 84x84 synthetic_count scene of 9 tokens, which the tiny model learns to count. The question
    says where the tile is ("top left"): V*-style questions name what to look at, and a ~1M-parameter model did not
    learn to read a box's coordinates off the image in a warm-start's budget (chance after 300 steps, measured).
    ``zoom_box``: the grey tile in source pixels (what an expert crops: the warm-start's tool-call transcripts).

    >>> row = synthetic_zoom_count(1, seed=0)[0]
    >>> row["image"].size, row["problem"], row["zoom_box"][2] - row["zoom_box"][0]
    ((252, 252), 'How many items are there in the grey frame (middle left)?', 84)
    >>> row["image"].crop(row["zoom_box"]).getpixel((0, 0)) == ZOOM_GREY  # the frame
    True
    """
    tile = 84
    side = image_size or 3 * tile
    rows = []
    for i in range(num_samples):
        rng = _rng(seed, i)
        k = rng.randint(1, 3)
        n = side // tile
        col, row = rng.randrange(n), rng.randrange(n)
        scene = Image.new("RGB", (side, side), (255, 255, 255))
        objects = _grid_scene(rng, tile, k)
        # A grey frame marks the tile (visible at any resolution, so the model can tell where to look); inside it
        # the scene is synthetic_count's, white (on a grey fill the tiny model did not learn to count in 250 SFT
        # steps, measured; on white it does in ~100).
        ImageDraw.Draw(objects).rectangle((0, 0, tile - 1, tile - 1), outline=ZOOM_GREY, width=3)
        box = (col * tile, row * tile, (col + 1) * tile, (row + 1) * tile)
        scene.paste(objects, box[:2])
        where = f"{_ROWS[row]} {_COLUMNS[col]}" if n == 3 else f"row {row + 1}, column {col + 1}"
        rows.append({"image": scene, "problem": ZOOM_PROBLEM.format(where=where),
                     "solution": f"<answer> {k} </answer>", "zoom_box": list(box)})
    return rows
