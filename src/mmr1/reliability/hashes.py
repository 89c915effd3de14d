"""Content hashes (marker field ``hashes``): one xxh3_128 digest per 16 MiB chunk of every file, computed
by rank 0 right after Trainer's save, while the files are still in the page cache (Trainer and
safetensors write the files themselves: hashing during the write would mean patching their writers).
Resume re-reads what ``MMR1_CHECKPOINT_VERIFY`` says:

- ``sample`` (default): every file's size; every chunk of each file up to 256 MiB (config, trainer
  state, RNG, scheduler, GRPO buffer, and the whole tiny model); of larger files the first, the last and
  every 16th chunk (~1/16 of their bytes). It detects any same-size change in a small file, and in a
  large one a change inside a sampled chunk, hence every damaged range longer than 240 MiB (zeroed
  extents after a crash, a copy cut short into a preallocated file, a file swapped for another of the
  same size) and any damage to a file's first or last 16 MiB (safetensors header, torch zip directory).
  A single flipped bit in the middle of a large file is found with probability ~1/16 only.
- ``full``: every chunk of every file (a 3B checkpoint: ~31 GB read per rank).
- ``sizes``: the size check alone (what earlier markers, without ``hashes``, always get).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash  # a dependency (pyproject.toml: >= 3 releases the GIL, which parallel hashing needs)

log = logging.getLogger("mmr1.reliability")

# Content hashes: one digest per chunk (a file's digest list); "sample" reads the chunks sample_chunks picks.
CHUNK_BYTES = 16 << 20
SAMPLE_STRIDE = 16  # files of up to 16 chunks (256 MiB) are read whole; larger ones every 16th chunk + the last
BLOCK = 1 << 20  # read size
THREADS = max(1, min(8, os.cpu_count() or 1))  # chunks hashed in parallel threads (xxhash releases the GIL)
ALGORITHM = "xxh3_128"  # ~9 GB/s a core (benchmarks/checkpoint_hash.py); the marker records it by name


def chunk_digest(path: Path, index: int, chunk_bytes: int) -> str:
    """xxh3_128 digest of bytes ``[index * chunk_bytes, (index + 1) * chunk_bytes)`` of ``path``."""
    h = xxhash.xxh3_128()
    buf = memoryview(bytearray(min(BLOCK, chunk_bytes)))
    with open(path, "rb", buffering=0) as f:
        f.seek(index * chunk_bytes)
        left = chunk_bytes
        while left:
            n = f.readinto(buf[:min(left, len(buf))])
            if not n:
                break
            h.update(buf[:n])
            left -= n
    return h.hexdigest()


def n_chunks(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))  # an empty file has one (empty) chunk


def sample_chunks(n: int) -> list[int]:
    """Chunks ``sample`` reads of a file of ``n`` chunks: all of a small file, else every 16th + the last."""
    if n <= SAMPLE_STRIDE:
        return list(range(n))
    return sorted(set(range(0, n, SAMPLE_STRIDE)) | {n - 1})


def chunk_digests(jobs: list[tuple[Path, int]], chunk_bytes: int) -> list[str]:
    if len(jobs) <= 1 or THREADS == 1:
        return [chunk_digest(p, i, chunk_bytes) for p, i in jobs]
    with ThreadPoolExecutor(THREADS, thread_name_prefix="mmr1-hash") as pool:
        return list(pool.map(lambda job: chunk_digest(job[0], job[1], chunk_bytes), jobs))


def hash_files(ckpt: Path, files: dict[str, int], chunk_bytes: int | None = None) -> dict[str, Any]:
    """The marker's ``hashes`` field: every chunk of every file (chunks hashed in parallel threads)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    jobs = [(ckpt / rel, i) for rel, size in files.items() for i in range(n_chunks(size, chunk_bytes))]
    found = iter(chunk_digests(jobs, chunk_bytes))
    digests = {rel: [next(found) for _ in range(n_chunks(size, chunk_bytes))] for rel, size in files.items()}
    return {"algorithm": ALGORITHM, "chunk_bytes": chunk_bytes, "files": digests}


def verify_content(ckpt: Path, files: dict[str, int], hashes: dict | None, level: str) -> str:
    """The first chunk whose digest differs from the marker's, as a problem line ("" when all match)."""
    if not hashes:
        log.warning("%s: its marker has no content hashes (written by an earlier mmr1): checked file sizes only",
                    ckpt)
        return ""
    algorithm, chunk_bytes = hashes.get("algorithm", ""), int(hashes.get("chunk_bytes", CHUNK_BYTES))
    if algorithm != ALGORITHM:  # a marker this mmr1 did not write (hand-made, or a later format)
        log.warning("%s: content hashes are %s, which this mmr1 does not compute (it writes %s): "
                    "checked file sizes only", ckpt, algorithm, ALGORITHM)
        return ""
    recorded = hashes.get("files", {})
    jobs = []
    for rel in files:
        digests = recorded.get(rel) or []
        picks = range(len(digests)) if level == "full" else sample_chunks(len(digests))
        jobs += [(rel, i) for i in picks]
    started = time.perf_counter()
    try:
        found = chunk_digests([(ckpt / rel, i) for rel, i in jobs], chunk_bytes)
    except OSError as err:
        return f"{ckpt}: a file cannot be read back ({err})"
    read = sum(min(chunk_bytes, files[rel] - i * chunk_bytes) for rel, i in jobs)
    took = time.perf_counter() - started
    log.info("%s: %s check (%s) read %.1f of %.1f MB in %.2f s", ckpt.name, algorithm, level, read / 1e6,
             sum(files.values()) / 1e6, took)
    for (rel, i), digest in zip(jobs, found):
        if digest != recorded[rel][i]:
            lo, hi = i * chunk_bytes, min((i + 1) * chunk_bytes, files[rel])
            return (f"{ckpt / rel} has the size that was written but not the content (bytes {lo}-{hi}: {algorithm} "
                    f"{digest}, {recorded[rel][i]} was written): altered or damaged after the save")
    return ""
