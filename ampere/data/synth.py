"""Deterministic synthetic ROPE-like dataset in the format of DESIGN.md §3.

`generate(out, products=100, seed=0)` writes

- `items.jsonl`: one row per item with exactly item_id, product_id, domain, title, asr, media,
  split. Ids: product `p0001`, items `p0001-page`, `p0001-short-0`, `p0001-live-0`. The split is
  by product (`format.split_for_product`: a sha256 of the id, 60/20/20 train/val/test by default).
- `media/page/<item>.png`: the page image; `media/short/<item>.mp4`: an H.264 yuv420p clip
  (libx264, else mpeg4) written with PyAV; `media/live/<item>/frame_000.jpg ...`: a folder of
  JPEG frames. Short and live clips have `clip_frames` frames of `image_size` pixels.
- `attributes.jsonl` (sidecar ground truth, never read by training): product_id, name, brand,
  category, color, material, detail, group_id, attributes.

Phenomena it contains:

- Fine-grained near-identical products: products come in groups of 3-5 that share category
  (bottle, mug, sneaker, backpack, lipstick, phone case, headphones, power bank), drawn shape
  and colour, and differ only in brand (a small label with a logo mark and the brand name in PIL's
  default font; distinct within a group), material (a subtle body texture: brushed lines, dots,
  hatch, stripes, ribs, gloss or none) and a small detail (cap, rim, laces, pocket, tip, camera
  module, hinge/mic, LEDs). The label is readable on the page image (product at 90% of the
  frame) but not in short/live frames (product at ~25-50% of the frame, blurred, compressed).
- Domain shift. Page: clean, centred, white background, PNG. Short: coloured, textured backdrop
  (gradient, stripes, checks or waves with noise), product at a random scale and rotation, blur,
  camera pan and zoom across the clip. Live: cluttered room (15-25 random shapes, a table), a
  presenter (skin-tone torso and head) behind the product and a hand occluding part of it,
  hand-held jitter, another product on the table in 30% of clips, blur, a colour cast and low
  resolution (downscaled 2.5-4x, then upscaled), JPEG quality 55-75.
- E-commerce titles (page items only; short/live titles are empty): "2026 New" + brand +
  category synonyms + colour, material, detail, features + stuffing such as "Hot Sale",
  "Free Shipping".
- ASR transcripts (short and live; page asr is ""): lower-case unpunctuated host chatter
  ("follow the anchor", "link number three in the cart", prices, countdowns, "don't miss out")
  of 60-160 words, 35% of live ones 160-330 words. A product block (brand + category synonym,
  colour, material, sometimes the detail or the brand repeated) starts after the 32nd word in
  75% of transcripts. Each brand word is misrecognised with probability 0.35 and every other
  product word with 0.15 (homophones such as red->read, or substitutions c->k, l->r, i->y, ...),
  so a reader can still recover them; 20% also name another (random) product; 10% are empty.

Under ``look=Look(mode="catalogue")`` (``synth_catalog.Look``, the knobs docs/concepts.md lists) pictures
carry identity as product photos do: every product wears a bold print in a second colour; a group
is either lookalikes (one colour, print and shape; their words differ) or word twins (the same
brand, colour, material and detail words; prints and shapes differ), so neither branch alone
finds every product; a share of brands are coined words (open vocabulary: no training title
holds them); misheard words get several edits, merges and splits; the product block starts at a
Beta-distributed share of the transcript.

Every random draw comes from numpy generators seeded by (seed, tag, index): group attributes
from the group number, media and text from the product index, so `add_products` extends a
dataset deterministically and files carry no timestamps (same seed, same bytes).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ampere.data.format import DEFAULT_FRACTIONS, SplitFractions, split_for_product
from ampere.data.synth_catalog import CLASSIC, Look, Product, random_product, sample_products
from ampere.data.synth_render import live_frames, page_image, product_sprite, short_frames, write_mp4
from ampere.data.synth_text import title, transcript

ITEMS_FILE, ATTRIBUTES_FILE, MEDIA_DIR = "items.jsonl", "attributes.jsonl", "media"
OTHER_IN_FRAME_RATE = 0.30
_PRODUCT_TAG = 3


@dataclass(frozen=True)
class SynthConfig:
    """What each product gets: items per domain, image side, frames per clip; how products are split;
    how they look and are spoken of."""

    short_per_product: int = 1
    live_per_product: int = 1
    image_size: int = 224
    clip_frames: int = 16
    fractions: SplitFractions = DEFAULT_FRACTIONS
    look: Look = CLASSIC

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.image_size % 2:
            raise ValueError(f"image_size must be an even number >= 32, got {self.image_size}")
        if self.clip_frames < 1 or self.short_per_product < 1 or self.live_per_product < 1:
            raise ValueError("clip_frames, short_per_product and live_per_product must be >= 1")


def generate(
    out: Path,
    products: int = 100,
    seed: int = 0,
    short_per_product: int = 1,
    live_per_product: int = 1,
    image_size: int = 224,
    clip_frames: int = 16,
    fractions: SplitFractions = DEFAULT_FRACTIONS,
    overwrite: bool = False,
    look: Look = CLASSIC,
) -> Path:
    """Write a synthetic dataset of `products` products to `out`; returns `out`."""
    config = SynthConfig(short_per_product, live_per_product, image_size, clip_frames, fractions, look)
    out = Path(out)
    existing = [out / name for name in (ITEMS_FILE, ATTRIBUTES_FILE, MEDIA_DIR) if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds a dataset ({existing[0].name}); pass overwrite=True")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / ITEMS_FILE).touch()
    (out / ATTRIBUTES_FILE).touch()
    _write_products(out, sample_products(seed, 0, products, 0, look), seed, config)
    return out


def add_products(folder: Path, products: int, seed: int, config: SynthConfig = SynthConfig()) -> None:
    """Append `products` new products (ids and groups continue after the existing ones); pass the
    `config` (its look above all) the dataset was generated with."""
    folder = Path(folder)
    lines = (folder / ATTRIBUTES_FILE).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    start = max((_number(r["product_id"]) for r in records), default=0)
    first_group = max((_number(r["group_id"]) for r in records), default=0)
    _write_products(folder, sample_products(seed, start, products, first_group, config.look), seed, config)


def _number(identifier: str) -> int:
    match = re.fullmatch(r"[a-z](\d+)", identifier)
    if match is None:
        raise ValueError(f"unexpected id {identifier!r} in {ATTRIBUTES_FILE}")
    return int(match.group(1))


def _write_products(root: Path, products: list[Product], seed: int, config: SynthConfig) -> None:
    """Render and append every product's items and attributes."""
    for sub in ("page", "short", "live"):
        (root / MEDIA_DIR / sub).mkdir(parents=True, exist_ok=True)
    items = root / ITEMS_FILE
    attributes = root / ATTRIBUTES_FILE
    for path in (items, attributes):
        text = path.read_bytes()
        if text and not text.endswith(b"\n"):
            path.write_bytes(text + b"\n")
    with items.open("a", encoding="utf-8") as item_file, attributes.open("a", encoding="utf-8") as attr_file:
        for product in tqdm(products, desc="synthetic products", unit="product"):
            for row in _product_items(root, product, seed, config):
                item_file.write(json.dumps(row, ensure_ascii=False) + "\n")
            attr_file.write(json.dumps(product.attribute_record(), ensure_ascii=False) + "\n")


def _product_items(root: Path, product: Product, seed: int, config: SynthConfig) -> list[dict[str, str]]:
    """Write the media of one product and return its items.jsonl rows."""
    rng = np.random.default_rng([seed, _PRODUCT_TAG, product.index])
    pid = product.product_id
    split = split_for_product(pid, config.fractions)
    sprite = product_sprite(product)
    size, count = config.image_size, config.clip_frames

    def row(item_id: str, domain: str, text: str, asr: str, media: str) -> dict[str, str]:
        return {"item_id": item_id, "product_id": pid, "domain": domain, "title": text, "asr": asr,
                "media": media, "split": split}

    media = f"{MEDIA_DIR}/page/{pid}-page.png"
    page_image(sprite, size).save(root / media, optimize=False)
    rows = [row(f"{pid}-page", "page", title(product, rng), "", media)]
    for k in range(config.short_per_product):
        item_id = f"{pid}-short-{k}"
        media = f"{MEDIA_DIR}/short/{item_id}.mp4"
        write_mp4(root / media, short_frames(sprite, size, count, rng, config.look.product_scale))
        rows.append(row(item_id, "short", "", transcript(product, rng, live=False, look=config.look), media))
    for k in range(config.live_per_product):
        item_id = f"{pid}-live-{k}"
        media = f"{MEDIA_DIR}/live/{item_id}"
        other = product_sprite(random_product(rng)) if rng.random() < OTHER_IN_FRAME_RATE else None
        (root / media).mkdir(exist_ok=True)
        quality = int(rng.integers(55, 76))
        for index, frame in enumerate(live_frames(sprite, other, size, count, rng, config.look.product_scale)):
            frame.save(root / media / f"frame_{index:03d}.jpg", quality=quality)
        rows.append(row(item_id, "live", "", transcript(product, rng, live=True, look=config.look), media))
    return rows
