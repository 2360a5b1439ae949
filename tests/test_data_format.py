"""Dataset format reading and validation (ampere.data.format)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ampere.data.format import (
    COLUMNS,
    DOMAIN_CODE,
    DOMAINS,
    MAX_ASR_CHARS,
    DatasetError,
    RecordProblem,
    SplitFractions,
    carve_validation,
    load_items,
    read_items,
    split_for_product,
)


def item(item_id: str, product_id: str, domain: str, media: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "item_id": item_id,
        "product_id": product_id,
        "domain": domain,
        "title": f"title of {item_id}",
        "asr": "",
        "media": media,
    }
    row.update(extra)
    return row


def make_media(root: Path) -> None:
    (root / "media").mkdir(parents=True)
    for name in ("p1", "p2"):
        Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "media" / f"{name}.png")
        for domain in ("short", "live"):
            folder = root / "media" / f"{name}-{domain}"
            folder.mkdir()
            for i in range(3):
                Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i:03d}.jpg")
    (root / "media" / "broken.png").write_bytes(b"not an image at all")


def write_lines(root: Path, lines: list[bytes]) -> None:
    (root / "items.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def encode(row: dict[str, object]) -> bytes:
    return json.dumps(row).encode("utf-8")


def valid_rows() -> list[dict[str, object]]:
    return [
        item("p1-page", "p1", "page", "media/p1.png"),
        item("p1-short", "p1", "short", "media/p1-short", asr="follow the anchor \x07 link three"),
        item("p1-live", "p1", "live", "media/p1-live", title="ctrl\x00chars\tkept"),
        item("p2-page", "p2", "page", "media/p2.png", split="train"),
        item("p2-short", "p2", "short", "media/p2-short", split="train"),
        item("p2-live", "p2", "live", "./media/p2-live", split="train"),
    ]


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A dataset with two valid products and one bad record of every kind (line numbers below)."""
    make_media(tmp_path)
    outside = tmp_path.parent / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    rows = valid_rows()
    lines = [encode(r) for r in rows[:3]]  # lines 1-3
    lines += [
        b"",  # 4: blank, not a record
        encode(item("p1-page", "p1", "page", "media/p1.png")),  # 5: duplicate of line 1
        encode(item("p1-video", "p1", "video", "media/p1-short")),  # 6: unknown domain
        encode(item("p1-short-2", "p1", "short", "media/missing.mp4")),  # 7: media missing
        b'{"item_id": "caf\xe9", "product_id": "p1"}',  # 8: latin-1, not UTF-8
        b'{"item_id": "p1-x", "product_id": ',  # 9: invalid JSON
        encode({k: v for k, v in item("p1-noasr", "p1", "short", "media/p1-short").items() if k != "asr"}),  # 10
        encode(item("p1-escape", "p1", "page", "../outside.png")),  # 11: escapes the folder
        encode(item("p1-abs", "p1", "page", str(outside))),  # 12: absolute path
        encode(item("p1-huge", "p1", "live", "media/p1-live", asr="word " * (MAX_ASR_CHARS // 5 + 1))),  # 13
        encode(item("p1-corrupt", "p1", "page", "media/broken.png")),  # 14: corrupt image
        encode(item("p3-page", "p3", "page", "media/p1.png")),  # 15: product p3 has no live item
        encode(item("p3-short", "p3", "short", "media/p1-short")),  # 16
        encode(item("p1-int", "p1", "page", "media/p1.png", title=5)),  # 17: wrong type
        encode(item("", "p1", "page", "media/p1.png")),  # 18: empty item_id
        encode(item("p1-split", "p1", "page", "media/p1.png", split="validation")),  # 19: bad split
        b"   ",  # 20: blank
        b"[1, 2]",  # 21: not an object
    ]
    lines += [encode(r) for r in rows[3:]]  # 22-24
    write_lines(tmp_path, lines)
    return tmp_path


EXPECTED = [
    ("p1-page", 5, "duplicate item_id (first seen on line 1)"),
    ("p1-video", 6, "unknown domain 'video'"),
    ("p1-short-2", 7, "does not exist"),
    ("", 8, "line is not valid UTF-8"),
    ("", 9, "invalid JSON"),
    ("p1-noasr", 10, "missing field 'asr'"),
    ("p1-escape", 11, "escapes the dataset folder"),
    ("p1-abs", 12, "escapes the dataset folder"),
    ("p1-huge", 13, "transcript too large"),
    ("p1-corrupt", 14, "corrupt media"),
    ("p3-page", 15, "product p3 has no live item"),
    ("p3-short", 16, "product p3 has no live item"),
    ("p1-int", 17, "field 'title' must be a string"),
    ("", 18, "empty item_id"),
    ("p1-split", 19, "split must be one of"),
    ("", 21, "not an object"),
]


def test_constants() -> None:
    assert DOMAINS == ("page", "short", "live")
    assert DOMAIN_CODE == {"page": "P", "short": "S", "live": "L"}


def test_every_bad_record_is_reported(messy: Path) -> None:
    frame, problems = read_items(messy)
    assert all(isinstance(p, RecordProblem) for p in problems)
    assert [(p.item_id, p.line) for p in problems] == [(i, line) for i, line, _ in EXPECTED]
    for problem, (_, _, reason) in zip(problems, EXPECTED, strict=True):
        assert reason in problem.reason, (problem, reason)
    assert "broken.png" in problems[9].reason
    non_blank = sum(1 for raw in (messy / "items.jsonl").read_bytes().split(b"\n") if raw.strip())
    assert len(frame) + len(problems) == non_blank == 22


def test_accepted_rows(messy: Path) -> None:
    frame, _ = read_items(messy)
    assert list(frame.columns) == COLUMNS
    assert list(frame["item_id"]) == [r["item_id"] for r in valid_rows()]
    assert frame.loc[1, "asr"] == "follow the anchor \x07 link three"  # control characters kept
    assert frame.loc[2, "title"] == "ctrl\x00chars\tkept"
    for media, path in zip(frame["media"], frame["media_path"], strict=True):
        assert Path(path).is_absolute() and Path(path).exists()
        assert Path(path) == (messy / media).resolve()
    # p2 is marked "train" and no record marks "val": validation is carved from the train products,
    # but never more than half of them, so the one train product stays train.
    assert set(frame.loc[frame.product_id == "p2", "split"]) == {"train"}


def test_split_by_product_when_absent(messy: Path) -> None:
    half_test = SplitFractions(val_fraction=0.0, test_fraction=0.5)
    frame, _ = read_items(messy, half_test)
    again, _ = read_items(messy, half_test)
    pd.testing.assert_frame_equal(frame, again)
    assert set(frame.query("product_id == 'p1'")["split"]) == {split_for_product("p1", half_test)}
    for fractions, expected in (((0.0, 0.0), "train"), ((0.0, 1.0), "test"), ((1.0, 0.0), "val")):
        frame, _ = read_items(messy, SplitFractions(*fractions))
        assert set(frame.query("product_id == 'p1'")["split"]) == {expected}
    # explicit splits win over the fallback (no validation share: nothing is carved from train)
    assert set(read_items(messy, SplitFractions(0.0, 1.0))[0].query("product_id == 'p2'")["split"]) == {"train"}


def test_a_lineage_gives_back_the_fractions_it_recorded(messy: Path) -> None:
    half_test = SplitFractions(val_fraction=0.0, test_fraction=0.5)
    lineage = {"dataset": str(messy), "data_version": "content:x", **asdict(half_test)}
    assert SplitFractions.recorded_in(lineage) == half_test  # the items a model saw split as it saw them
    assert SplitFractions.recorded_in({"dataset": str(messy)}) == SplitFractions()  # recorded before: the defaults


def test_validation_is_carved_from_marked_train_products_only_when_none_is_marked_val(tmp_path: Path) -> None:
    make_media(tmp_path)
    rows = valid_rows()
    for row in rows[:3]:
        row["split"] = "test"
    write_lines(tmp_path, [encode(r) for r in rows])
    assert set(read_items(tmp_path, SplitFractions(0.8, 0.2))[0]["split"]) == {"test", "val"}  # share 0.8 / 0.8 = all
    assert set(read_items(tmp_path, SplitFractions(0.0, 0.2))[0]["split"]) == {"test", "train"}
    for row in rows[:3]:
        row["split"] = "val"
    write_lines(tmp_path, [encode(r) for r in rows])
    assert set(read_items(tmp_path, SplitFractions(0.8, 0.2))[0]["split"]) == {"val", "train"}  # marked val: kept as is


def test_split_for_product_is_stable_and_balanced() -> None:
    ids = [f"p{i:04d}" for i in range(2000)]
    fractions = SplitFractions(val_fraction=0.2, test_fraction=0.3)
    splits = [split_for_product(pid, fractions) for pid in ids]
    assert splits == [split_for_product(pid, fractions) for pid in ids]
    assert 0.25 < splits.count("test") / len(ids) < 0.35
    assert 0.15 < splits.count("val") / len(ids) < 0.25
    carved = carve_validation(ids, fractions)
    assert len(carved) == round(0.2 / 0.7 * len(ids)) and carved == carve_validation(reversed(ids), fractions)
    with pytest.raises(ValueError, match="<= 1"):
        SplitFractions(0.6, 0.6)


def test_switches(messy: Path) -> None:
    _, problems = read_items(messy, check_media=False)
    assert "p1-corrupt" not in {p.item_id for p in problems}
    frame, problems = read_items(messy, require_all_domains=False)
    assert {"p3-page", "p3-short"} <= set(frame["item_id"])
    assert "p3-page" not in {p.item_id for p in problems}
    with pytest.raises(ValueError):
        SplitFractions(test_fraction=1.5)


def test_conflicting_splits_in_one_product(tmp_path: Path) -> None:
    make_media(tmp_path)
    rows = valid_rows()
    rows[4]["split"] = "test"
    write_lines(tmp_path, [encode(r) for r in rows])
    frame, problems = read_items(tmp_path)
    assert list(frame["product_id"].unique()) == ["p1"]
    assert [p.line for p in problems] == [4, 5, 6]
    assert all("p2 has items in several splits (test, " in p.reason for p in problems)


def test_load_items_raises_listing_problems(messy: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_items(messy)
    message = str(error.value)
    assert "p1-video" in message and "line 6" in message and "unknown domain" in message
    assert len(error.value.problems) == len(EXPECTED)


def test_load_items_truncates_long_problem_lists(tmp_path: Path) -> None:
    make_media(tmp_path)
    write_lines(tmp_path, [encode(item(f"x{i}", "p9", "nope", "media/p1.png")) for i in range(25)])
    with pytest.raises(DatasetError) as error:
        load_items(tmp_path)
    assert "25 rejected" in str(error.value) and "and 5 more" in str(error.value)
    assert "x19" in str(error.value) and "x20" not in str(error.value)


def test_load_items_clean_dataset_and_parquet(tmp_path: Path) -> None:
    make_media(tmp_path)
    write_lines(tmp_path, [encode(r) for r in valid_rows()])
    frame = load_items(tmp_path)
    assert len(frame) == 6
    (tmp_path / "items.jsonl").unlink()
    pd.DataFrame(valid_rows()).to_parquet(tmp_path / "items.parquet")
    pd.testing.assert_frame_equal(load_items(tmp_path), frame)


def test_missing_items_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither items.jsonl nor items.parquet"):
        read_items(tmp_path)


def _faststart_mp4(path: Path, frames: int = 40) -> None:
    """An mp4 whose index comes first, so a cut copy still opens and decodes its first frames."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(frames):
            image = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())


def test_media_is_checked_as_the_pipeline_decodes_it(tmp_path: Path) -> None:
    """Corruption past the headers (a cut JPEG, a cut mp4 whose first frame decodes) and paths that
    leave the folder through symlinks or name the folder itself are rejected with their reason."""
    root = tmp_path / "data"
    make_media(root)
    Image.new("RGB", (64, 64), (30, 90, 150)).save(root / "media" / "whole.jpg", quality=90)
    whole = (root / "media" / "whole.jpg").read_bytes()
    (root / "media" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    _faststart_mp4(root / "media" / "whole.mp4")
    clip = (root / "media" / "whole.mp4").read_bytes()
    (root / "media" / "cut.mp4").write_bytes(clip[: len(clip) // 3])
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (16, 16)).save(outside / "secret.png")
    (root / "media" / "link.png").symlink_to(outside / "secret.png")
    (root / "media" / "link-frames").symlink_to(outside, target_is_directory=True)
    (root / "media" / "p1-live" / "999.jpg").symlink_to(outside / "secret.png")
    (root / "media" / "here").symlink_to(root, target_is_directory=True)
    rows = valid_rows()[:3] + [
        item("p9-whole", "p9", "page", "media/whole.jpg"),
        item("p9-cut", "p9", "page", "media/cut.jpg"),
        item("p9-mp4", "p9", "short", "media/whole.mp4"),
        item("p9-cut-mp4", "p9", "short", "media/cut.mp4"),
        item("p9-link", "p9", "page", "media/link.png"),
        item("p9-link-frames", "p9", "live", "media/link-frames"),
        item("p9-dot", "p9", "live", "."),
        item("p9-up", "p9", "live", "media/.."),
        item("p9-here", "p9", "live", "media/here"),
        item("p9-live", "p9", "live", "media/p2-live"),
    ]
    write_lines(root, [encode(r) for r in rows])
    frame, problems = read_items(root)
    reasons = {p.item_id: p.reason for p in problems}
    assert reasons["p9-cut"].startswith("corrupt media:") and "cut.jpg: cannot read image" in reasons["p9-cut"]
    assert reasons["p9-cut-mp4"].startswith("corrupt media:") and "cut.mp4" in reasons["p9-cut-mp4"]
    assert f"resolves to {outside / 'secret.png'}, outside the dataset folder" in reasons["p9-link"]
    assert f"resolves to {outside}, outside the dataset folder" in reasons["p9-link-frames"]
    assert "frame '999.jpg' of 'media/p1-live' resolves to" in reasons["p1-live"]
    for name in ("p9-dot", "p9-up", "p9-here"):
        assert "is the dataset folder itself" in reasons[name], reasons[name]
    # the first frame of the cut clip decodes: the header-only check of before passed it
    import av

    with av.open(str(root / "media" / "cut.mp4")) as container:
        assert next(container.decode(video=0), None) is not None
    assert {"p9-whole", "p9-mp4", "p9-live"} <= set(frame["item_id"])
    assert len(frame) + len(problems) == len(rows)


def test_carved_validation_holds_enough_products_to_choose_and_keeps_half_for_training() -> None:
    """A held-out set with 20 train products got 5 validation products (every model scored 100 there):
    the carve takes at least `min_val_products`, never more than half of the train products."""
    ids = [f"q{i:03d}" for i in range(200)]
    assert len(carve_validation(ids[:20])) == 10  # min 20, capped at half
    assert len(carve_validation(ids[:60])) == 20  # the share (15) is raised to the minimum
    assert len(carve_validation(ids[:120])) == 30  # the share 0.2 / 0.8 of 120
    assert carve_validation(ids[:60], SplitFractions(val_fraction=0.0)) == set()
    assert len(carve_validation(ids[:60], SplitFractions(min_val_products=0))) == 15
    recorded = {"val_fraction": "0.2", "test_fraction": "0.2", "min_val_products": "30"}
    assert SplitFractions.recorded_in(recorded) == SplitFractions(min_val_products=30)
