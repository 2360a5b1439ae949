"""The dataset format (DESIGN.md §3): a folder with `items.jsonl` (or `items.parquet`).

Every record is either accepted or reported as a `RecordProblem` naming its item id, its 1-based
line (row) number and the reason; nothing is dropped silently, so
`len(accepted) + len(problems)` equals the number of non-blank lines (rows) received.
Text is kept as written (control characters included): cleaning is the summarizer's job.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ampere.data.frames import MediaError, is_image, is_video, load_frames
from ampere.lineage.hashing import content_hash

DOMAINS = ("page", "short", "live")
DOMAIN_CODE = {"page": "P", "short": "S", "live": "L"}
SPLITS = ("train", "val", "test")
TEXT_FIELDS = ("item_id", "product_id", "domain", "title", "asr", "media")
COLUMNS = [*TEXT_FIELDS, "split", "media_path"]
MAX_ASR_CHARS = 20_000
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class RecordProblem:
    """One rejected record: its item id ("" if unknown), 1-based line number and the reason."""

    item_id: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line} item {self.item_id!r}: {self.reason}"


class DatasetError(ValueError):
    """A dataset that cannot be used; `problems` holds every rejected record."""

    def __init__(self, message: str, problems: list[RecordProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class SplitFractions:
    """Shares of products that a stable hash of the product id sends to validation and test.

    Validation is for every choice (early stopping, checkpoint, promotion), test only for
    reporting; the rest is train.
    """

    val_fraction: float = field(default=0.2, metadata={"doc": "share of products in the validation split"})
    test_fraction: float = field(default=0.2, metadata={"doc": "share of products in the test split"})
    min_val_products: int = field(
        default=20,
        metadata={
            "doc": "validation carved from a dataset's train products (none marked val): at least this many "
            "products, at most half of them"
        },
    )

    def __post_init__(self) -> None:
        if not (0.0 <= self.val_fraction <= 1.0 and 0.0 <= self.test_fraction <= 1.0):
            raise ValueError(f"split fractions must be in [0, 1], got {self}")
        if self.val_fraction + self.test_fraction > 1.0:
            raise ValueError(f"val_fraction + test_fraction must be <= 1, got {self}")
        if self.min_val_products < 0:
            raise ValueError(f"min_val_products must be >= 0, got {self.min_val_products}")

    @classmethod
    def recorded_in(cls, lineage: Mapping[str, Any]) -> SplitFractions:
        """The fractions a model's lineage recorded (a model logged before they were: the defaults)."""
        kinds = {"val_fraction": float, "test_fraction": float, "min_val_products": lambda v: int(float(v))}
        return cls(**{f.name: kinds[f.name](lineage[f.name]) for f in fields(cls) if f.name in lineage})


DEFAULT_FRACTIONS = SplitFractions()


def _position(product_id: str) -> float:
    """A stable position in [0, 1) for a product id (sha256)."""
    return int(content_hash(product_id, "text", 16), 16) / 2**64


def split_for_product(product_id: str, fractions: SplitFractions = DEFAULT_FRACTIONS) -> str:
    """The split of a product whose records carry none: test, then val, then train along its hash position."""
    position = _position(product_id)
    if position < fractions.test_fraction:
        return "test"
    return "val" if position < fractions.test_fraction + fractions.val_fraction else "train"


def carve_validation(train_products: Iterable[str], fractions: SplitFractions = DEFAULT_FRACTIONS) -> set[str]:
    """For a dataset that marks train and test but no val: the train products that become validation.

    The share validation has among non-test products, and at least ``min_val_products`` (at most half
    of the train products), so that validation can tell models apart: 5 carved products scored every
    model 100. Products are taken in the order of their stable hash position; no validation share
    carves none.
    """
    products = sorted(set(train_products), key=_position)
    non_test = 1.0 - fractions.test_fraction
    share = fractions.val_fraction / non_test if non_test > 0 else 0.0
    if share <= 0:
        return set()
    count = max(round(share * len(products)), min(fractions.min_val_products, len(products) // 2))
    return set(products[: min(count, len(products))])


def read_items(
    folder: str | Path,
    fractions: SplitFractions = DEFAULT_FRACTIONS,
    check_media: bool = True,
    require_all_domains: bool = True,
) -> tuple[pd.DataFrame, list[RecordProblem]]:
    """Accepted items (file order, columns `COLUMNS`) and one problem per rejected record.

    Records without a split get ``split_for_product``; when no accepted record is marked "val",
    the validation products are carved from the ones marked "train" (``carve_validation``).
    """
    root = Path(folder).resolve()
    accepted: list[tuple[int, dict[str, str]]] = []
    marked_train: set[int] = set()  # lines whose record says split "train"
    marked_val = False
    problems: list[RecordProblem] = []
    first_line: dict[str, int] = {}
    for line, record in _raw_records(root):
        if isinstance(record, RecordProblem):
            problems.append(record)
            continue
        item_id = record.get("item_id") if isinstance(record, dict) else None
        item_id = item_id if isinstance(item_id, str) else ""
        reason = _record_reason(record, root, line, first_line, check_media)
        if item_id and item_id not in first_line:
            first_line[item_id] = line
        if reason:
            problems.append(RecordProblem(item_id, line, reason))
        else:
            accepted.append((line, _row(record, root, fractions)))
            if record.get("split") == "train":
                marked_train.add(line)
            marked_val = marked_val or record.get("split") == "val"
    if marked_train and not marked_val:
        carved = carve_validation((row["product_id"] for line, row in accepted if line in marked_train), fractions)
        for line, row in accepted:
            if line in marked_train and row["product_id"] in carved:
                row["split"] = "val"
    accepted, product_problems = _product_checks(accepted, require_all_domains)
    problems = sorted(problems + product_problems, key=lambda p: p.line)
    frame = pd.DataFrame([row for _, row in accepted], columns=COLUMNS)
    return frame, problems


def load_items(folder: str | Path, **kw: Any) -> pd.DataFrame:
    """`read_items` that raises DatasetError listing the problems if any record was rejected."""
    frame, problems = read_items(folder, **kw)
    if problems:
        raise DatasetError(describe_problems(Path(folder), problems), problems)
    return frame


def describe_problems(folder: Path, problems: list[RecordProblem]) -> str:
    """A message listing the first `SHOWN_PROBLEMS` problems and how many there are."""
    lines = [f"{len(problems)} rejected record(s) in {folder}:"]
    lines += [f"  {problem}" for problem in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
    return "\n".join(lines)


def _raw_records(root: Path) -> list[tuple[int, Any]]:
    """(line, parsed record or RecordProblem) for every non-blank line / parquet row."""
    jsonl, parquet = root / "items.jsonl", root / "items.parquet"
    if jsonl.exists() and parquet.exists():
        raise DatasetError(f"{root} holds both items.jsonl and items.parquet; keep one")
    if jsonl.exists():
        return _jsonl_records(jsonl)
    if parquet.exists():
        try:
            rows = pq.read_table(parquet).to_pylist()
        except Exception as error:  # pyarrow raises several types for bad files
            raise DatasetError(f"cannot read {parquet}: {error}") from error
        return list(enumerate(rows, start=1))
    raise DatasetError(f"{root} holds neither items.jsonl nor items.parquet")


def _jsonl_records(path: Path) -> list[tuple[int, Any]]:
    records: list[tuple[int, Any]] = []
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                records.append((line, RecordProblem("", line, "line is not valid UTF-8")))
                continue
            try:
                records.append((line, json.loads(text.removeprefix("\ufeff"))))
            except json.JSONDecodeError as error:
                records.append((line, RecordProblem("", line, f"invalid JSON: {error.msg}")))
    return records


def _record_reason(
    record: Any, root: Path, line: int, first_line: dict[str, int], media_check: bool
) -> str:
    """Why the record is rejected, or "" when it is accepted (cheap checks first)."""
    if not isinstance(record, dict):
        return f"record is a JSON {type(record).__name__}, not an object"
    for name in TEXT_FIELDS:
        if name not in record or record[name] is None:
            return f"missing field {name!r}"
        if not isinstance(record[name], str):
            return f"field {name!r} must be a string, got {type(record[name]).__name__}"
    split = record.get("split")
    if split is not None and split not in SPLITS:
        return f"split must be one of {SPLITS}, got {split!r}"
    for name in ("item_id", "product_id"):
        if not record[name].strip():
            return f"empty {name}"
    if record["item_id"] in first_line:
        return f"duplicate item_id (first seen on line {first_line[record['item_id']]})"
    if record["domain"] not in DOMAINS:
        return f"unknown domain {record['domain']!r} (expected one of {DOMAINS})"
    if len(record["asr"]) > MAX_ASR_CHARS:
        return f"transcript too large ({len(record['asr'])} > {MAX_ASR_CHARS} characters)"
    return _media_reason(record["domain"], record["media"], root, media_check)


def _media_reason(domain: str, media: str, root: Path, media_check: bool) -> str:
    if not media.strip():
        return "empty media path"
    normal = posixpath.normpath(media.replace("\\", "/"))
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        return f"media path {media!r} escapes the dataset folder"
    path = root / normal
    if not path.exists():
        return f"media path {media!r} does not exist"
    if path.resolve() == root:
        return f"media path {media!r} is the dataset folder itself"
    outside = _outside(path, root)
    if outside:
        return f"media path {media!r} resolves to {outside}, outside the dataset folder"
    if domain == "page" and not (path.is_file() and is_image(path)):
        return f"page media {media!r} must be an image file"
    if domain != "page" and not (path.is_dir() or (path.is_file() and is_video(path))):
        return f"{domain} media {media!r} must be a video file or a folder of frame images"
    if path.is_dir():
        escaping = next((p for p in path.iterdir() if _outside(p, root)), None)
        if escaping is not None:
            return f"frame {escaping.name!r} of {media!r} resolves to {_outside(escaping, root)}, outside the dataset folder"
    if media_check:
        try:
            load_frames(path)  # what backbone_features will decode
        except MediaError as error:
            return f"corrupt media: {error}"
    return ""


def _outside(path: Path, root: Path) -> str:
    """The resolved target of `path` (symlinks followed) when it lies outside `root`, else ""."""
    resolved = path.resolve()
    return "" if resolved.is_relative_to(root) else str(resolved)


def _row(record: dict[str, Any], root: Path, fractions: SplitFractions) -> dict[str, str]:
    row = {name: record[name] for name in TEXT_FIELDS}
    row["split"] = record.get("split") or split_for_product(record["product_id"], fractions)
    row["media_path"] = str(root / posixpath.normpath(record["media"].replace("\\", "/")))
    return row


def _product_checks(
    accepted: list[tuple[int, dict[str, str]]], require_all_domains: bool
) -> tuple[list[tuple[int, dict[str, str]]], list[RecordProblem]]:
    """Reject every item of a product that lacks a domain or whose items disagree on the split."""
    domains: dict[str, set[str]] = defaultdict(set)
    splits: dict[str, set[str]] = defaultdict(set)
    for _, row in accepted:
        domains[row["product_id"]].add(row["domain"])
        splits[row["product_id"]].add(row["split"])
    kept: list[tuple[int, dict[str, str]]] = []
    problems: list[RecordProblem] = []
    for line, row in accepted:
        product = row["product_id"]
        missing = [d for d in DOMAINS if d not in domains[product]]
        if len(splits[product]) > 1:
            reason = f"product {product} has items in several splits ({', '.join(sorted(splits[product]))})"
        elif require_all_domains and missing:
            reason = f"product {product} has no {' or '.join(missing)} item"
        else:
            kept.append((line, row))
            continue
        problems.append(RecordProblem(row["item_id"], line, reason))
    return kept, problems
