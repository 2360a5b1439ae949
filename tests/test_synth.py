"""The synthetic ROPE-like generator (ampere.data.synth and its helpers)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest

from ampere.data.format import read_items
from ampere.data.frames import load_frames
from ampere.data.synth import SynthConfig, add_products, generate
from ampere.data.synth_catalog import BRANDS, CATEGORIES, PRINTS, Look, sample_products
from ampere.data.synth_text import LATE_TOKEN, _spoken, transcript

ITEM_FIELDS = ["item_id", "product_id", "domain", "title", "asr", "media", "split"]
ATTRIBUTE_FIELDS = ["product_id", "name", "brand", "category", "color", "material", "detail", "group_id", "attributes"]
SMALL = {"products": 6, "image_size": 96, "clip_frames": 10}


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "data", seed=0, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", seed=0, **SMALL)
    other = generate(tmp_path / "other", seed=1, **SMALL)
    assert file_hashes(again) == file_hashes(dataset)
    assert len(file_hashes(dataset)) > 6 * 3
    assert (other / "items.jsonl").read_bytes() != (dataset / "items.jsonl").read_bytes()
    assert (other / "media/page/p0001-page.png").read_bytes() != (dataset / "media/page/p0001-page.png").read_bytes()


def test_items_and_sidecar_fields(dataset: Path) -> None:
    items = jsonl(dataset / "items.jsonl")
    attributes = jsonl(dataset / "attributes.jsonl")
    assert all(list(row) == ITEM_FIELDS for row in items)
    assert all(list(row) == ATTRIBUTE_FIELDS for row in attributes)
    assert [a["product_id"] for a in attributes] == [f"p{i:04d}" for i in range(1, 7)]
    ids = [row["item_id"] for row in items]
    assert ids[:3] == ["p0001-page", "p0001-short-0", "p0001-live-0"]
    assert len(ids) == 18 == len(set(ids))
    for row in items:
        assert row["split"] in ("train", "val", "test")
        if row["domain"] == "page":
            assert row["asr"] == "" and row["media"].endswith(".png") and row["title"]
        assert "brand" not in row and "attributes" not in row


def test_media_formats_and_frames(dataset: Path) -> None:
    items = jsonl(dataset / "items.jsonl")
    for row in items:
        path = dataset / row["media"]
        frames = load_frames(path)
        assert len(frames) == 8 and all(f.size == (96, 96) and f.mode == "RGB" for f in frames)
        if row["domain"] == "short":
            assert path.suffix == ".mp4"
            with av.open(str(path)) as container:
                codec = container.streams.video[0].codec_context.name
                assert codec in ("h264", "mpeg4")
                assert sum(1 for _ in container.decode(video=0)) == 10
        if row["domain"] == "live":
            assert sorted(p.name for p in path.iterdir()) == [f"frame_{i:03d}.jpg" for i in range(10)]


def test_read_items_accepts_everything(dataset: Path) -> None:
    frame, problems = read_items(dataset)
    assert problems == []
    assert len(frame) == 18
    assert (frame.groupby("product_id")["domain"].nunique() == 3).all()


def test_groups_share_category_and_colour(dataset: Path) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in jsonl(dataset / "attributes.jsonl"):
        groups[record["group_id"]].append(record)
    assert max(len(members) for members in groups.values()) >= 3
    for members in groups.values():
        assert len({m["category"] for m in members}) == 1
        assert len({m["color"] for m in members}) == 1
        assert len({m["brand"] for m in members}) == len(members)


def test_groups_are_fine_grained_in_a_large_catalogue() -> None:
    products = sample_products(seed=0, start=0, count=300, first_group=0)
    by_group = defaultdict(list)
    for product in products:
        by_group[product.group].append(product)
    sizes = [len(members) for members in by_group.values()]
    assert min(sizes[:-1]) >= 3 and max(sizes) <= 5
    assert {p.category for p in products} == set(CATEGORIES)


def test_product_words_in_page_title(dataset: Path) -> None:
    attributes = {a["product_id"]: a for a in jsonl(dataset / "attributes.jsonl")}
    for row in jsonl(dataset / "items.jsonl"):
        if row["domain"] == "page":
            title = row["title"].lower()
            truth = attributes[row["product_id"]]
            assert truth["brand"].lower() in title and truth["color"] in title and truth["material"] in title


def test_dataset_transcripts_mention_product_late(dataset: Path) -> None:
    attributes = {a["product_id"]: a for a in jsonl(dataset / "attributes.jsonl")}
    late = 0
    for row in jsonl(dataset / "items.jsonl"):
        if row["domain"] != "page" and row["asr"]:
            words = row["asr"].split()
            late += attributes[row["product_id"]]["brand"].lower() in words[LATE_TOKEN:]
    assert late >= 1


def test_transcript_statistics() -> None:
    """Over many draws: empties, lengths, late product words, recognisable (possibly misheard) words."""
    products = sample_products(seed=7, start=0, count=40, first_group=0)
    texts = []
    for i, product in enumerate(products * 10):
        rng = np.random.default_rng([7, i])
        texts.append((product, transcript(product, rng, live=i % 2 == 1)))
    empty = sum(1 for _, text in texts if not text)
    assert 0.04 < empty / len(texts) < 0.18
    spoken = [(p, t.split()) for p, t in texts if t]
    lengths = [len(words) for _, words in spoken]
    assert min(lengths) >= 60 and max(lengths) > 160
    late = misheard = 0
    for product, words in spoken:
        category_words = {w for s in CATEGORIES[product.category].synonyms for w in s.split()}
        product_at = [i for i, w in enumerate(words) if w in category_words | {product.brand.lower()}]
        late += bool(product_at) and product_at[0] >= LATE_TOKEN
        brand = product.brand.lower()
        assert min(edit_distance(w, brand) for w in words) <= 2, (product.brand, words)
        colour = product.color.split()[-1]
        assert min(edit_distance(w, colour) for w in words) <= 2, (product.color, words)
        misheard += brand not in words
    assert late / len(spoken) > 0.5
    assert misheard > 0  # recognition errors happen


def test_generate_refuses_existing_dataset(dataset: Path) -> None:
    with pytest.raises(FileExistsError):
        generate(dataset, products=1)


def test_add_products_appends_deterministically(dataset: Path, tmp_path: Path) -> None:
    config = SynthConfig(image_size=96, clip_frames=10)
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(dataset, first)
    shutil.copytree(dataset, second)
    before_items = (dataset / "items.jsonl").read_text()
    before_attributes = (dataset / "attributes.jsonl").read_text()
    add_products(first, products=4, seed=5, config=config)
    add_products(second, products=4, seed=5, config=config)
    assert file_hashes(first) == file_hashes(second)
    items = (first / "items.jsonl").read_text()
    attributes = (first / "attributes.jsonl").read_text()
    assert items.startswith(before_items) and attributes.startswith(before_attributes)
    new = jsonl(first / "attributes.jsonl")[6:]
    assert [a["product_id"] for a in new] == ["p0007", "p0008", "p0009", "p0010"]
    old_groups = {a["group_id"] for a in jsonl(dataset / "attributes.jsonl")}
    assert not old_groups & {a["group_id"] for a in new}
    for path, digest in file_hashes(dataset).items():
        if path not in ("items.jsonl", "attributes.jsonl"):
            assert file_hashes(first)[path] == digest
    frame, problems = read_items(first)
    assert problems == [] and len(frame) == 30


CATALOGUE = Look(mode="catalogue")


def test_catalogue_groups_are_lookalikes_or_word_twins_and_a_share_of_brands_is_coined() -> None:
    """Lookalikes share colour, print and shape and differ in brand words; word twins share every
    title word (brand, colour, material, detail) and differ in print or shape: neither branch alone
    tells every product apart. About `coined_brand_rate` of brands are words no other product holds."""
    products = sample_products(seed=0, start=0, count=600, first_group=0, look=CATALOGUE)
    groups = defaultdict(list)
    for product in products:
        groups[product.group].append(product)
    kinds = []
    for members in groups.values():
        if len(members) < 2:
            continue
        looks = {(p.color, p.print_name, p.print_color, p.aspect) for p in members}
        words = {(p.brand, p.color, p.material, p.detail) for p in members}
        if len(looks) == 1:
            assert len({p.brand for p in members}) == len(members)  # lookalikes: the words tell them apart
            kinds.append("lookalikes")
        else:
            assert len(words) == 1 and len(looks) == len(members)  # twins: only the pictures tell them apart
            kinds.append("twins")
    assert 0.35 < kinds.count("lookalikes") / len(kinds) < 0.65
    assert all(p.print_name in PRINTS for p in products)
    named = sum(p.brand in BRANDS for p in products)
    assert 0.25 < 1 - named / len(products) < 0.45
    classic = sample_products(seed=0, start=0, count=50, first_group=0)
    assert all(p.print_name == "none" and p.brand in BRANDS for p in classic)


def test_catalogue_transcripts_mishear_beyond_one_substitution_and_place_the_mention_by_its_beta() -> None:
    product = sample_products(seed=0, start=0, count=1, first_group=0, look=CATALOGUE)[0]
    heard = [_spoken("lumina carbon fiber power bank", 1.0, np.random.default_rng(i), CATALOGUE) for i in range(300)]
    words = [h.split() for h in heard]
    assert any(len(w) < 5 for w in words) and any(len(w) > 5 for w in words)  # merges and splits
    edits = [edit_distance(w, "lumina") for w, n in zip((h[0] for h in words), map(len, words), strict=True) if n == 5]
    assert max(edits) >= 2  # several edits on one word
    once = _spoken("lumina carbon fiber power bank", 1.0, np.random.default_rng(0), Look())
    assert len(once.split()) == 5  # the classic look: one error per word, never a merge or split

    def start(look: Look, seed: int) -> float:
        text = transcript(product, np.random.default_rng(seed), live=False, look=look)
        tokens = text.split()
        first = next((i for i, w in enumerate(tokens) if w in ("made", "real")), None)  # the material template
        return (first or 0) / max(1, len(tokens))

    early = Look(mode="catalogue", mention_a=1.0, mention_b=8.0)
    late = Look(mode="catalogue", mention_a=8.0, mention_b=1.0)
    assert np.mean([start(early, s) for s in range(120)]) < np.mean([start(late, s) for s in range(120)]) - 0.3


def test_catalogue_dataset_is_deterministic_and_classic_is_unchanged(tmp_path: Path, dataset: Path) -> None:
    one = generate(tmp_path / "one", seed=0, look=CATALOGUE, **SMALL)
    two = generate(tmp_path / "two", seed=0, look=CATALOGUE, **SMALL)
    assert file_hashes(one) == file_hashes(two)
    assert (one / "media/page/p0001-page.png").read_bytes() != (dataset / "media/page/p0001-page.png").read_bytes()
    assert all("print" in record for record in jsonl(one / "attributes.jsonl"))
    assert not any("print" in record for record in jsonl(dataset / "attributes.jsonl"))
    with pytest.raises(ValueError, match="look mode"):
        Look(mode="glossy")
