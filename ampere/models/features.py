"""Frozen-backbone features per item: 8 frame features and text token states, with a cache."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ampere.data.frames import NUM_FRAMES, DecodeLimits, MediaError, load_frames
from ampere.lineage.hashing import content_hash
from ampere.models.backbones import ImageEncoder, TextEncoder
from ampere.models.feature_store import IDS, FeatureWriter, RowFile, open_features

TextSource = Literal["summary", "raw", "none"]


@dataclass
class ItemFeatures:
    """Backbone features of N items, row-aligned with the id columns.

    frames float32 [N, 8, Dv]; text float16/float32 [N, T, Dt]; text_mask bool [N, T]
    (True = real token; all False = no text). Arrays are numpy arrays or, as ``load`` gives them,
    ``RowFile`` views read from disk by rows (a batch at a time).
    """

    item_ids: list[str]
    product_ids: list[str]
    domains: list[str]
    splits: list[str]
    frames: np.ndarray | RowFile
    text: np.ndarray | RowFile
    text_mask: np.ndarray | RowFile

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        sizes = {
            "product_ids": len(self.product_ids),
            "domains": len(self.domains),
            "splits": len(self.splits),
            "frames": len(self.frames),
            "text": len(self.text),
            "text_mask": len(self.text_mask),
        }
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"ItemFeatures: {n} item_ids but lengths {bad}")
        if self.text.shape[:2] != self.text_mask.shape:
            raise ValueError(f"text {self.text.shape} and text_mask {self.text_mask.shape} disagree")

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> ItemFeatures:
        """The rows at ``index`` (in that order); arrays on disk stay there (a narrower view)."""
        index = np.asarray(index, dtype=np.int64)
        return ItemFeatures(
            item_ids=[self.item_ids[i] for i in index],
            product_ids=[self.product_ids[i] for i in index],
            domains=[self.domains[i] for i in index],
            splits=[self.splits[i] for i in index],
            frames=_rows(self.frames, index),
            text=_rows(self.text, index),
            text_mask=_rows(self.text_mask, index),
        )

    def only(self, splits: Sequence[str]) -> ItemFeatures:
        """The rows whose split is one of ``splits`` (in order)."""
        return self.subset([i for i, split in enumerate(self.splits) if split in splits])

    @property
    def nbytes(self) -> int:
        """Bytes of the frame, text and mask arrays (read from disk, if they are there)."""
        return sum(int(a.nbytes) for a in (self.frames, self.text, self.text_mask))

    def save(self, folder: str | Path) -> Path:
        """Write a features folder (``ampere.models.feature_store``); returns its path."""
        writer = FeatureWriter(folder)
        columns = dict(zip(IDS, (self.item_ids, self.product_ids, self.domains, self.splits), strict=True))
        writer.add(columns, np.asarray(self.frames), np.asarray(self.text), np.asarray(self.text_mask))
        return writer.close()

    @classmethod
    def load(cls, folder: str | Path, training: bool = False) -> ItemFeatures:
        """A features folder, its arrays left on disk and read by rows; ``training``: with the text states
        training reads (``FeatureWriter.add_training_texts``) in place of those items' own."""
        ids, arrays = open_features(folder, training)
        return cls(**ids, **arrays)


def _rows(array: np.ndarray | RowFile, index: np.ndarray) -> np.ndarray | RowFile:
    return array.take(index) if isinstance(array, RowFile) else array[index]


def media_digest(path: str | Path) -> str:
    """sha256 of a media file's bytes; for a frame folder, of its tree (names and bytes)."""
    return content_hash(path, "tree" if Path(path).is_dir() else "file")


def _cache_file(cache_dir: Path, encoder_id: str, digest: str) -> Path:
    return cache_dir / re.sub(r"[^A-Za-z0-9._@-]", "_", encoder_id) / f"{digest}.npy"


def unique_frames(frames: list[Image.Image]) -> tuple[list[Image.Image], np.ndarray]:
    """Distinct frames (by pixels) and, per input frame, the index of its distinct frame."""
    keys: dict[bytes, int] = {}
    unique: list[Image.Image] = []
    inverse = []
    for im in frames:
        key = content_hash(f"{im.mode}{im.size}".encode() + im.tobytes(), "bytes")
        if key not in keys:
            keys[key] = len(unique)
            unique.append(im)
        inverse.append(keys[key])
    return unique, np.array(inverse)


@dataclass
class _Pending:
    row: int
    images: list[Image.Image]
    inverse: np.ndarray
    cache_file: Path | None


@dataclass
class _Prepared:
    """One item made ready for encoding: cached features, frames to encode, or a failure."""

    cached: np.ndarray | None = None
    images: list[Image.Image] | None = None
    inverse: np.ndarray | None = None
    cache_file: Path | None = None
    failure: str | None = None


def item_frames(path: str | Path, limits: DecodeLimits | None = None) -> list[Image.Image]:
    """An item's ``NUM_FRAMES`` frames (``load_frames``, within ``limits``); a ``MediaError`` naming the path
    and the reason when its media cannot give them."""
    frames = load_frames(path, limits=limits)
    if len(frames) != NUM_FRAMES:
        raise MediaError(path, f"expected {NUM_FRAMES} frames, got {len(frames)}")
    return frames


def _prepare(path: str | Path, cache_dir: Path | None, encoder_id: str) -> _Prepared:
    """Cache look-up, decoding and frame de-duplication of one item (runs in a worker thread)."""
    try:
        cache_file = None
        if cache_dir is not None:
            cache_file = _cache_file(Path(cache_dir), encoder_id, media_digest(path))
            if cache_file.exists():
                return _Prepared(cached=np.load(cache_file, allow_pickle=False))
        frames = item_frames(path)
    except (MediaError, OSError) as e:
        return _Prepared(failure=f"{type(e).__name__}: {e}")
    images, inverse = unique_frames(frames)
    return _Prepared(images=images, inverse=inverse, cache_file=cache_file)


def _prefetched(fn, args: Sequence, ahead: int, workers: int = 1) -> Iterator:
    """``fn(a)`` for each ``a`` in order, computed up to ``ahead`` items in advance by ``workers``
    threads (decoding overlaps the encoder and, with several, other decoding: PyAV and PIL release
    the GIL); ``ahead`` 0: inline."""
    if ahead <= 0:
        yield from map(fn, args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frame-decode") as pool:
        window: deque = deque()
        try:
            for a in args:
                window.append(pool.submit(fn, a))
                if len(window) > ahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


def _encode_pending(pending: list[_Pending], encoder: ImageEncoder, out: np.ndarray) -> None:
    feats = encoder.encode([im for p in pending for im in p.images])
    start = 0
    for p in pending:
        item = feats[start : start + len(p.images)][p.inverse]
        start += len(p.images)
        out[p.row] = item
        if p.cache_file is not None:
            p.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.cache_file.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, item)
            os.replace(tmp, p.cache_file)


def encode_frames(items: Sequence[list[Image.Image]], encoder: ImageEncoder) -> np.ndarray:
    """Frame features [N, 8, encoder.dim] float32 of items already decoded (``item_frames``); identical
    frames of an item are encoded once, as ``visual_features`` does."""
    out = np.zeros((len(items), NUM_FRAMES, encoder.dim), dtype=np.float32)
    pending = [_Pending(row, *unique_frames(frames), None) for row, frames in enumerate(items)]
    if pending:
        _encode_pending(pending, encoder, out)
    return out


def visual_features(
    media_paths: Sequence[str | Path],
    encoder: ImageEncoder,
    cache_dir: Path | None = None,
    flush_images: int = 64,
    prefetch: int = 8,
    progress: bool = True,
    decode_workers: int = 1,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Frame features [N, 8, encoder.dim] float32 and failures [(row, reason)].

    Frames come from ``ampere.data.frames.load_frames``; identical frames of an item (a page
    image repeated 8 times, padding) are encoded once. With ``cache_dir``, features are cached
    per (media content sha256, encoder.id) as .npy. A media error leaves a zero row and is
    reported, not raised: the caller quarantines the item. Items are decoded by a worker thread
    up to ``prefetch`` items ahead of the encoder (0: no thread), by ``decode_workers`` threads (at most
    ``prefetch`` busy), in
    batches of about ``flush_images`` distinct frames. ``progress``: a tqdm bar (off for a query).
    """
    out = np.zeros((len(media_paths), NUM_FRAMES, encoder.dim), dtype=np.float32)
    failures: list[tuple[int, str]] = []
    pending: list[_Pending] = []
    prepared = _prefetched(lambda path: _prepare(path, cache_dir, encoder.id), media_paths, prefetch, decode_workers)
    bar = tqdm(prepared, total=len(media_paths), desc="frame features", unit="item", disable=not progress)
    for row, item in enumerate(bar):
        if item.failure is not None:
            failures.append((row, item.failure))
            continue
        if item.cached is not None:
            out[row] = item.cached
            continue
        pending.append(_Pending(row, item.images, item.inverse, item.cache_file))
        if sum(len(p.images) for p in pending) >= flush_images:
            _encode_pending(pending, encoder, out)
            pending = []
    if pending:
        _encode_pending(pending, encoder, out)
    return out, failures


def text_inputs(
    domains: Sequence[str],
    titles: Sequence[str | None],
    asrs: Sequence[str | None],
    summaries: Sequence[str | None],
    source: TextSource,
) -> list[str]:
    """The text each item feeds the tower.

    "summary": page -> title, short/live -> LLM summary; "raw": page -> title, short/live ->
    raw ASR; "none" (visual-only baseline): every text empty. Missing values count as "".
    """
    if source not in ("summary", "raw", "none"):
        raise ValueError(f"unknown text source {source!r}")
    if source == "none":
        return [""] * len(domains)
    texts = []
    for domain, title, asr, summary in zip(domains, titles, asrs, summaries, strict=True):
        if domain == "page":
            texts.append(title or "")
        elif domain in ("short", "live"):
            texts.append((summary if source == "summary" else asr) or "")
        else:
            raise ValueError(f"unknown domain {domain!r}")
    return texts


def text_features(
    texts: Sequence[str],
    encoder: TextEncoder,
    batch_size: int = 256,
    dtype: type = np.float16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Token states [N, T, D] (``dtype``, float16 by default to halve storage) and mask [N, T];
    ``progress``: a tqdm bar (off for a query)."""
    states = np.zeros((len(texts), encoder.length, encoder.dim), dtype=dtype)
    mask = np.zeros((len(texts), encoder.length), dtype=bool)
    for start in tqdm(range(0, len(texts), batch_size), desc="text features", unit="batch", disable=not progress):
        s, m = encoder.encode(texts[start : start + batch_size])
        states[start : start + len(s)] = s
        mask[start : start + len(m)] = m
    return states, mask
