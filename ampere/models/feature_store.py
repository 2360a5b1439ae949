"""Item features on disk, read by rows: one raw row-major file per array and a JSON manifest.

Why this shape: features are dense fixed-shape tensors per item ([8, 1280] frames, [33, 384] token
states) read by random row batches in training and by row ranges in embedding. A raw file per
array gives that at any size with plain positioned reads (``os.preadv`` straight into the batch's
buffer), needs no new dependency, and is what ``np.memmap`` would read too. Reads are never mapped:
a batch is read into the process's memory and freed with it, so the process holds what a batch
needs, not the pages of every row it ever touched (the kernel's page cache stays the kernel's).
A columnar format (Parquet, Arrow) fits per-item scalars, not tensor rows read at random.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT = 1
ARRAYS = ("frames", "text", "text_mask")
IDS = ("item_ids", "product_ids", "domains", "splits")
TRAINING_TEXT_IDS = "training_text_ids"  # items whose training text differs from their own (rows after the items')


@dataclass(frozen=True)
class RowFile:
    """An array on disk, row-addressable like a numpy array: ``a[rows]``, ``a[rows, :width]``, ``len(a)``,
    ``a.shape``; ``rows`` are the file's rows this view holds, in order (``take`` narrows it, lazily)."""

    path: Path
    dtype: np.dtype
    row_shape: tuple[int, ...]
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self._row_bytes

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        physical = self.rows[first]
        if np.ndim(physical) == 0:
            return self._read(np.array([physical]))[0][rest]
        return self._read(physical)[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self._read(self.rows)
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def take(self, index: Sequence[int] | np.ndarray) -> RowFile:
        """The rows at ``index`` of this view (nothing is read)."""
        return replace(self, rows=self.rows[np.asarray(index, dtype=np.int64)])

    def _read(self, physical: np.ndarray) -> np.ndarray:
        """The file's rows ``physical`` (in that order) as one array: one positioned read per run of consecutive rows."""
        physical = np.asarray(physical, dtype=np.int64)
        out = np.empty((len(physical), *self.row_shape), dtype=self.dtype)
        if not len(physical):
            return out
        flat = out.reshape(len(physical), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(physical) != 1) + 1
        with open(self.path, "rb", buffering=0) as f:
            for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(physical)], strict=True):
                _read_into(f.fileno(), memoryview(flat[start:stop]).cast("B"), int(physical[start]) * self._row_bytes)
        return out


def _read_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset`` (``preadv`` may return less than asked)."""
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise ValueError(f"feature file ends {len(buffer) - done} bytes early (truncated?)")
        done += got


class FeatureWriter:
    """Writes a features folder by appending batches of items, then (``add_training_texts``) the text
    states training reads for some of them instead of their own; ``close`` publishes the folder
    atomically (written beside it, then renamed into place). Memory: one batch at a time."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._staging = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging.mkdir(parents=True)
        self._files = {name: open(self._staging / f"{name}.bin", "wb") for name in ARRAYS}  # noqa: SIM115
        self._layout: dict[str, tuple[str, tuple[int, ...]]] = {}
        self._rows = dict.fromkeys(ARRAYS, 0)
        self._ids: dict[str, list[str]] = {name: [] for name in (*IDS, TRAINING_TEXT_IDS)}

    def add(self, ids: dict[str, Sequence[str]], frames: np.ndarray, text: np.ndarray, text_mask: np.ndarray) -> None:
        """Append items: ``ids`` holds the columns of ``IDS``, row-aligned with the arrays."""
        if self._ids[TRAINING_TEXT_IDS]:
            raise ValueError("items cannot be added after training texts")
        lengths = {len(ids[name]) for name in IDS} | {len(frames), len(text), len(text_mask)}
        if len(lengths) != 1:
            raise ValueError(f"a feature batch's ids and arrays disagree in length: {sorted(lengths)}")
        for name in IDS:
            self._ids[name].extend(str(value) for value in ids[name])
        for name, array in zip(ARRAYS, (frames, text, text_mask), strict=True):
            self._append(name, array)

    def add_training_texts(self, item_ids: Sequence[str], text: np.ndarray, text_mask: np.ndarray) -> None:
        """The text states ``item_ids`` (already added) train on instead of their own (e.g. an out-of-fold summary)."""
        if not len(item_ids) == len(text) == len(text_mask):
            raise ValueError(f"{len(item_ids)} training-text ids for {len(text)} states and {len(text_mask)} masks")
        self._ids[TRAINING_TEXT_IDS].extend(str(i) for i in item_ids)
        self._append("text", text)
        self._append("text_mask", text_mask)

    def _append(self, name: str, array: np.ndarray) -> None:
        layout = (np.dtype(array.dtype).str, tuple(int(d) for d in array.shape[1:]))
        if self._layout.setdefault(name, layout) != layout:
            raise ValueError(f"{name}: rows of {layout} after rows of {self._layout[name]}")
        self._files[name].write(np.ascontiguousarray(array).tobytes())
        self._rows[name] += len(array)

    def close(self) -> Path:
        """Publish the folder (replacing an earlier one of that name) and return its path."""
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        known = set(self._ids["item_ids"])
        unknown = [i for i in self._ids[TRAINING_TEXT_IDS] if i not in known]
        if unknown:
            raise ValueError(f"{len(unknown)} training texts for items not in these features, e.g. {unknown[:3]}")
        for name, values in self._ids.items():
            np.save(self._staging / f"{name}.npy", np.array(values, dtype=str))
        arrays = {
            name: {"dtype": self._layout[name][0], "row_shape": list(self._layout[name][1]), "rows": self._rows[name]}
            for name in ARRAYS
            if name in self._layout
        }
        if len(arrays) != len(ARRAYS):
            raise ValueError("features need at least one batch (its arrays name the row shapes, even with no rows)")
        manifest = {"format": FORMAT, "items": len(self._ids["item_ids"]), "arrays": arrays}
        (self._staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self._staging, self.folder)
        return self.folder


def open_features(folder: str | Path, training: bool = False) -> tuple[dict[str, list[str]], dict[str, RowFile]]:
    """(id columns, arrays) of a features folder; ``training``: the text rows are those training reads
    (an item's training text where one was added, else its own)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ValueError(f"{folder} is not a features folder (no {MANIFEST}; written by an older version? "
                         "materialise backbone_features again)")  # fmt: skip
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder}: features format {manifest.get('format')}, this code reads {FORMAT}")
    ids = {name: np.load(folder / f"{name}.npy", allow_pickle=False).tolist() for name in (*IDS, TRAINING_TEXT_IDS)}
    items = manifest["items"]
    arrays = {
        name: RowFile(folder / f"{name}.bin", np.dtype(spec["dtype"]), tuple(spec["row_shape"]), np.arange(items))
        for name, spec in manifest["arrays"].items()
    }
    if training and ids[TRAINING_TEXT_IDS]:
        position = {item_id: i for i, item_id in enumerate(ids["item_ids"])}
        rows = np.arange(items)
        rows[[position[i] for i in ids[TRAINING_TEXT_IDS]]] = items + np.arange(len(ids[TRAINING_TEXT_IDS]))
        arrays |= {name: replace(arrays[name], rows=rows) for name in ("text", "text_mask")}
    return {name: ids[name] for name in IDS}, arrays
