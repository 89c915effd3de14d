"""Benchmark: what content hashes in ``mmr1_complete.json`` cost, side by side in one process.

    python benchmarks/checkpoint_hash.py                    # ~1 minute on 2 cores (trains 2 tiny steps)
    python benchmarks/checkpoint_hash.py --checkpoint RUN/checkpoint-4 --mb 2048 --dir /scratch

Part 1, a file of ``--mb`` MiB in ``--dir``: MB/s of blake2b, xxh3_64 and xxh3_128 (what mmr1 writes) in
memory, then over the file through mmr1's own reader (``hashes.chunk_digests``, parallel chunks; the other two
through a copy of it, ``read_chunks``, with their hasher), warm (page cache: what the
marker write after Trainer's save sees) and cold (pages dropped with posix_fadvise: what a resume on a fresh
node sees), against the named reference "reading the file once" and the size-only check.
Part 2, the tiny model's checkpoint (a real 2-step run, or ``--checkpoint``): Trainer's save, the marker
with and without hashes, and ``verify`` at each level, warm and cold.
Part 3, on paper: a Qwen2.5-VL-3B checkpoint at the rates measured above.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mmr1.reliability import checkpoints as ck  # noqa: E402
from mmr1.reliability import hashes  # noqa: E402

# The candidates compared; mmr1 computes one of them, hashes.ALGORITHM (xxh3_128).
HASHERS: dict[str, Callable[[], Any]] = {"blake2b": lambda: hashlib.blake2b(digest_size=16),
                                         "xxh3_64": xxhash.xxh3_64, "xxh3_128": xxhash.xxh3_128}
ALGORITHMS = list(HASHERS)
MB = 1e6


def drop_cache(path: Path) -> None:
    """Evict ``path``'s pages (clean ones: fsync first) so the next read comes from the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_once(path: Path) -> None:
    buf = memoryview(bytearray(1 << 20))
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def best_of(fn, reps: int, before=None) -> float:
    """Fastest of ``reps`` runs (seconds): the least disturbed by the other jobs on a shared machine."""
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def hash_file(path: Path, algorithm: str) -> None:
    """Every chunk of ``path``: through mmr1's own code for the algorithm it writes, else its reader's copy."""
    if algorithm != hashes.ALGORITHM:
        read_chunks(path, HASHERS[algorithm])
        return
    size = path.stat().st_size
    hashes.chunk_digests([(path, i) for i in range(hashes.n_chunks(size, hashes.CHUNK_BYTES))], hashes.CHUNK_BYTES)


def hash_checkpoint(ckpt: Path, files: dict[str, int], algorithm: str) -> None:
    """The marker's hashes of a checkpoint: mmr1's hash_files for the algorithm it writes."""
    if algorithm == hashes.ALGORITHM:
        hashes.hash_files(ckpt, files)
    else:
        for rel in files:
            read_chunks(ckpt / rel, HASHERS[algorithm])


def read_chunks(path: Path, new_hasher: Callable[[], Any] | None = None) -> None:
    """mmr1's chunked parallel reader (hashes.chunk_digest) with another hasher, or without one: the read's
    own cost."""
    def one(i: int) -> None:
        h = new_hasher() if new_hasher else None
        buf = memoryview(bytearray(hashes.BLOCK))
        with open(path, "rb", buffering=0) as f:
            f.seek(i * hashes.CHUNK_BYTES)
            left = hashes.CHUNK_BYTES
            while left and (n := f.readinto(buf[:min(left, len(buf))])):
                if h is not None:
                    h.update(buf[:n])
                left -= n

    with ThreadPoolExecutor(hashes.THREADS) as pool:
        list(pool.map(one, range(hashes.n_chunks(path.stat().st_size, hashes.CHUNK_BYTES))))


def part1(mb: int, where: str | None, reps: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    print(f"# part 1: throughput (MB/s, best of {reps}; {hashes.THREADS} hashing thread(s), "
          f"{hashes.CHUNK_BYTES >> 20} MiB chunks)")
    buf = os.urandom(64 << 20)
    for algo in ALGORITHMS:
        rates[f"mem {algo}"] = len(buf) / MB / best_of(lambda a=algo: HASHERS[a]().update(buf), reps)
    rates["mem sha256 (for scale)"] = len(buf) / MB / best_of(lambda: hashlib.sha256(buf).digest(), reps)
    with tempfile.TemporaryDirectory(dir=where) as d:
        path = Path(d) / "blob.bin"
        with open(path, "wb") as f:
            for _ in range(mb // 64):
                f.write(os.urandom(64 << 20))
            f.flush()
            os.fsync(f.fileno())
        size = path.stat().st_size / MB
        read_once(path)
        threads = f"{hashes.THREADS} threads"
        rates["warm reference: reading the file once"] = size / best_of(lambda: read_chunks(path), reps)
        rates["warm   (plain sequential read, 1 thread)"] = size / best_of(lambda: read_once(path), reps)
        for algo in ALGORITHMS:
            rates[f"warm {algo}"] = size / best_of(lambda a=algo: hash_file(path, a), reps)
        cold = lambda: drop_cache(path)  # noqa: E731
        rates["cold reference: reading the file once"] = size / best_of(lambda: read_chunks(path), reps, before=cold)
        rates["cold   (plain sequential read, 1 thread)"] = size / best_of(lambda: read_once(path), reps, before=cold)
        rates["cold xxh3_128"] = size / best_of(lambda: hash_file(path, "xxh3_128"), reps, before=cold)
        rates["cold blake2b"] = size / best_of(lambda: hash_file(path, "blake2b"), reps, before=cold)
        stat_s = best_of(lambda: [path.stat().st_size for _ in range(1000)], reps) / 1000
    print(f"file: {mb} MiB in {where or tempfile.gettempdir()}; 'reading the file once' = mmr1's chunked reader "
          f"({threads}) without hashing; warm = in the page cache, cold = pages dropped (posix_fadvise)")
    for name, r in rates.items():
        print(f"  {name:42s} {r:9.0f} MB/s")
    print(f"  {'size-only check (stat)':42s} {stat_s * 1e6:9.1f} us per file, whatever its size")
    return rates


def tiny_checkpoint(out: Path) -> tuple[Path, float, float]:
    """A real checkpoint of the tiny model (2 GRPO steps): its path, Trainer's save time, mmr1's marker time."""
    from hydra import compose, initialize_config_dir
    from trl import GRPOTrainer

    from mmr1.train import CONF_DIR, train

    timing = {"save": 0.0, "marker": 0.0}
    save, marker = GRPOTrainer._save_checkpoint, ck.write_marker

    def timed_save(self, *a, **k):
        t = time.perf_counter()
        try:
            return save(self, *a, **k)
        finally:
            timing["save"] = time.perf_counter() - t

    def timed_marker(*a, **k):
        t = time.perf_counter()
        try:
            return marker(*a, **k)
        finally:
            timing["marker"] = time.perf_counter() - t

    overrides = ["model.warmstart.enabled=false", "dataset.num_samples=4", "trainer.per_device_train_batch_size=8",
                 "trainer.num_generations=4", "trainer.max_completion_length=8", "trainer.max_steps=2",
                 "trainer.save_steps=2", f"run_dir={out}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GRPOTrainer._save_checkpoint, ck.write_marker = timed_save, timed_marker
    try:
        train(cfg)
    finally:
        GRPOTrainer._save_checkpoint, ck.write_marker = save, marker
    return out / "checkpoint-2", timing["save"], timing["marker"]


def part2(ckpt: Path, save_s: float | None, marker_s: float | None, reps: int) -> None:
    files = ck._files(ckpt)
    total = sum(files.values())
    print(f"\n# part 2: the tiny model's checkpoint {ckpt} ({len(files)} files, {total / MB:.1f} MB; "
          f"best of {reps})")
    if save_s is not None:
        print(f"  Trainer's save (weights, optimizer, RNG, state)    {save_s * 1e3:8.1f} ms   (reference)")
        print(f"  mmr1's marker in that run (xxh3_128 + fsync)        {marker_s * 1e3:8.1f} ms")
    no_hash = best_of(lambda: ck.write_marker(ckpt, 0, fsync=False, hashes=False), reps)
    print(f"  marker, sizes only (no fsync)                       {no_hash * 1e3:8.1f} ms")
    for algo in ALGORITHMS:
        t = best_of(lambda a=algo: hash_checkpoint(ckpt, files, a), reps)
        print(f"  + hashes {algo:10s} (warm, while in page cache)    {t * 1e3:8.1f} ms   {total / MB / t:6.0f} MB/s")
    ck.write_marker(ckpt, 2, fsync=False)  # a real marker again (xxh3_128)
    cold = lambda: [drop_cache(ckpt / rel) for rel in files]  # noqa: E731
    for level in ck.VERIFY_LEVELS:
        warm = best_of(lambda lv=level: ck.verify(ckpt, level=lv), reps)
        c = best_of(lambda lv=level: ck.verify(ckpt, level=lv), reps, before=cold)
        print(f"  verify level={level:6s}  warm {warm * 1e3:7.2f} ms   cold {c * 1e3:7.2f} ms")


def part3(rates: dict[str, float]) -> None:
    gib = 1 << 30
    weights, optim = int(7 * 1e9), int(24 * 1e9)
    layouts = {
        "3B full fine-tune, 1 process: model.safetensors 7 GB + optimizer.pt 24 GB": [weights, optim],
        "3B ZeRO-3 on 6 ranks: weights 7 GB + 6 optimizer shards of 4 GB": [weights] + [optim // 6] * 6,
    }
    warm, cold_ref = rates["warm xxh3_128"], rates["cold reference: reading the file once"]
    print("\n# part 3: on paper, Qwen2.5-VL-3B (bf16 weights ~7 GB, fp32 Adam m+v ~24 GB; DeepSpeed's fp32 master "
          "weights would add 12 GB)")
    for name, sizes in layouts.items():
        total = sum(sizes)
        sampled = sum(min(hashes.CHUNK_BYTES, s - i * hashes.CHUNK_BYTES) for s in sizes
                      for i in hashes.sample_chunks(hashes.n_chunks(s, hashes.CHUNK_BYTES)))
        print(f"  {name}: {total / gib:.1f} GiB (sample reads {sampled / gib:.2f} GiB = {sampled / total:.1%})")
        print(f"    save, every byte hashed by rank 0 from the page cache: xxh3_128 {total / MB / warm:5.1f} s "
              f"({warm:.0f} MB/s measured), blake2b {total / MB / rates['warm blake2b']:5.1f} s")
        for label, rate in ((f"measured cold read {cold_ref:.0f} MB/s", cold_ref), ("network FS 1000 MB/s", 1000),
                            ("NVMe 3000 MB/s", 3000)):
            r = min(rate, warm)
            print(f"    resume (per rank), {label:28s} full {total / MB / r:6.1f} s   sample {sampled / MB / r:5.1f} s"
                  "   sizes ~0 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=512, help="size of the part-1 test file, MiB (multiple of 64)")
    ap.add_argument("--dir", default=None, help="where the part-1 file goes (the disk checkpoints go to)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="an existing checkpoint for part 2 (copied)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rates = part1(args.mb, args.dir, args.reps)
    with tempfile.TemporaryDirectory() as d:
        if args.checkpoint is not None:
            ckpt = Path(d) / args.checkpoint.name
            shutil.copytree(args.checkpoint, ckpt)
            save_s = marker_s = None
        else:
            import logging

            logging.basicConfig(level=logging.WARNING)
            ckpt, save_s, marker_s = tiny_checkpoint(Path(d) / "run")
        part2(ckpt, save_s, marker_s, max(args.reps, 20))
    part3(rates)


if __name__ == "__main__":
    main()
