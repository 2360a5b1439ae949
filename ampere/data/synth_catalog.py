"""Product catalogue of the synthetic generator: categories, colours, brands and product groups.

Products come in groups of 3-5 of one category. Under the ``classic`` look (``Look``) the members
of a group share shape and colour and differ only in brand, material (a subtle texture) and a
small detail, so pictures barely tell them apart. Under the ``catalogue`` look, pictures carry
identity as product photos do: every product wears a bold print (stripes, dots, checks, ...) in
a second colour, and a group is either *lookalikes* (one colour, print and shape: they differ in
their words) or *word twins* (one brand, colour, material and detail: the same words, told apart
only by their prints and shapes); a share of brands are coined words that no other product, and
so no training title, holds. Every random draw comes from a numpy Generator seeded by (seed, tag,
index), so a product or group never depends on how many were generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP_SIZES = (3, 5)  # inclusive range of products per group
_LAYOUT_TAG, _GROUP_TAG, _COIN_TAG = 1, 2, 4
LOOKS = ("classic", "catalogue")
PRINTS = ("stripes", "dots", "checks", "chevron", "band", "rings", "split", "zigzag")


@dataclass(frozen=True)
class Look:
    """How products look and are spoken of (the generator's knobs; docs/concepts.md, "The synthetic dataset")."""

    mode: str = "classic"  # "classic": groups look alike, words tell them apart; "catalogue": see the module docstring
    lookalike_share: float = 0.5  # catalogue: share of groups of lookalikes (the others are word twins)
    coined_brand_rate: float = 0.35  # catalogue: share of brands that are coined words (open vocabulary)
    max_edits: int = 3  # catalogue: a misheard word gets 1 to max_edits character edits
    merge_split_rate: float = 0.3  # catalogue: share of misheard words merged with the next word or split in two
    mention_a: float = 2.0  # catalogue: the product block starts at a Beta(mention_a, mention_b) share of the transcript
    mention_b: float = 2.0
    clip_scale: float = 1.6  # catalogue: the product's size in clip frames, relative to the classic look

    @property
    def product_scale(self) -> float:
        """How much larger than under the classic look a product is drawn in clip frames."""
        return self.clip_scale if self.mode == "catalogue" else 1.0

    def __post_init__(self) -> None:
        if self.mode not in LOOKS:
            raise ValueError(f"look mode must be one of {LOOKS}, got {self.mode!r}")
        for name in ("lookalike_share", "coined_brand_rate", "merge_split_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_edits < 1 or self.mention_a <= 0 or self.mention_b <= 0 or not 0.5 <= self.clip_scale <= 2.5:
            raise ValueError("max_edits must be >= 1, mention_a and mention_b > 0, clip_scale in [0.5, 2.5]")


CLASSIC = Look()


@dataclass(frozen=True)
class Category:
    """A product category: words used in titles/transcripts and the variations it allows."""

    name: str
    synonyms: tuple[str, ...]
    materials: tuple[tuple[str, str], ...]  # (material, texture pattern drawn on the body)
    details: tuple[str, ...]
    features: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category(
            "bottle",
            ("water bottle", "sports bottle", "insulated bottle", "thermos flask"),
            (("stainless steel", "brushed"), ("tritan plastic", "gloss"), ("glass", "plain"), ("bamboo", "ribbed")),
            ("flat cap", "sport cap", "loop cap"),
            ("750ml", "leak proof", "bpa free", "keeps cold 24 hours"),
        ),
        Category(
            "mug",
            ("coffee mug", "ceramic cup", "tea cup", "travel mug"),
            (("ceramic", "gloss"), ("enamel", "dots"), ("porcelain", "plain"), ("stoneware", "hatch")),
            ("gold rim", "silver rim", "black rim"),
            ("350ml", "microwave safe", "dishwasher safe", "gift box"),
        ),
        Category(
            "sneaker",
            ("sneakers", "running shoes", "sports shoes", "trainers"),
            (("mesh", "hatch"), ("leather", "plain"), ("suede", "dots"), ("canvas", "stripes")),
            ("white laces", "black laces", "contrast heel tab"),
            ("breathable", "non slip sole", "lightweight", "unisex"),
        ),
        Category(
            "backpack",
            ("backpack", "school bag", "travel bag", "laptop backpack"),
            (("nylon", "ribbed"), ("canvas", "hatch"), ("leather", "plain"), ("polyester", "stripes")),
            ("square pocket", "round pocket", "zip pocket"),
            ("waterproof", "usb charging port", "15.6 inch laptop", "large capacity"),
        ),
        Category(
            "lipstick",
            ("lipstick", "lip stick", "lip colour", "matte lipstick"),
            (("matte", "plain"), ("satin", "brushed"), ("glossy", "gloss"), ("velvet", "dots")),
            ("slanted tip", "round tip", "pointed tip"),
            ("long lasting", "moisturizing", "waterproof", "non sticky"),
        ),
        Category(
            "phone case",
            ("phone case", "phone cover", "protective case", "mobile shell"),
            (("silicone", "plain"), ("leather", "dots"), ("carbon fiber", "hatch"), ("tpu", "gloss")),
            ("dual camera", "triple camera", "ring holder"),
            ("shockproof", "slim fit", "anti fingerprint", "wireless charging"),
        ),
        Category(
            "headphones",
            ("headphones", "headset", "wireless earphones", "bluetooth headphones"),
            (("protein leather", "plain"), ("aluminium", "brushed"), ("fabric", "hatch"), ("matte plastic", "dots")),
            ("boom mic", "foldable hinge", "led ring"),
            ("noise cancelling", "40 hour battery", "bluetooth 5.3", "foldable"),
        ),
        Category(
            "power bank",
            ("power bank", "portable charger", "battery pack", "charging bank"),
            (("aluminium", "brushed"), ("abs plastic", "plain"), ("leather", "dots"), ("carbon fiber", "hatch")),
            ("four led dots", "digital display", "two usb ports"),
            ("20000mah", "fast charging", "pd 22.5w", "airline safe"),
        ),
    )
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "navy blue": (30, 45, 110),
    "black": (35, 35, 38),
    "forest green": (40, 110, 60),
    "pink": (230, 140, 170),
    "yellow": (235, 200, 50),
    "purple": (120, 60, 150),
    "orange": (235, 125, 40),
    "grey": (130, 130, 135),
    "brown": (120, 80, 50),
    "teal": (40, 140, 140),
    "sky blue": (110, 170, 225),
    "beige": (215, 195, 160),
}

BRANDS = (
    "Lumina", "Vortex", "Aerion", "Kessel", "Nordik", "Zenith", "Orbita", "Halcyon", "Pyxis",
    "Tundra", "Solace", "Marlow", "Quasar", "Brisa", "Cobalt", "Ember", "Fjord", "Glint", "Helix",
    "Ionis", "Kairo", "Lyra", "Mosaic", "Nimbus", "Opalix", "Pulse", "Riva", "Sable", "Tempo",
    "Umbra", "Vela", "Wren", "Xeno", "Yara", "Zephyr", "Corvo", "Dune", "Elara", "Ferro", "Gusto",
)


@dataclass(frozen=True)
class Product:
    """One synthetic product (ground truth); `index` is 0-based, ids are `p0001`, `p0002`, ..."""

    index: int
    group: int
    brand: str
    category: str
    color: str
    material: str
    detail: str
    features: tuple[str, ...]
    aspect: float  # horizontal stretch of the drawn shape (classic: shared by the group)
    print_name: str = "none"  # catalogue: the bold print on the body (PRINTS)
    print_color: str = "none"  # catalogue: its colour (COLORS)

    @property
    def product_id(self) -> str:
        return f"p{self.index + 1:04d}"

    @property
    def group_id(self) -> str:
        return f"g{self.group + 1:04d}"

    @property
    def name(self) -> str:
        return f"{self.brand} {self.color} {self.material} {self.category}"

    @property
    def texture(self) -> str:
        return dict(CATEGORIES[self.category].materials)[self.material]

    def attribute_record(self) -> dict[str, object]:
        """The row of `attributes.jsonl` (ground truth, never in items.jsonl)."""
        return {
            "product_id": self.product_id,
            "name": self.name,
            "brand": self.brand,
            "category": self.category,
            "color": self.color,
            "material": self.material,
            "detail": self.detail,
            "group_id": self.group_id,
            "attributes": [self.color, self.material, self.detail, *self.features],
            **({"print": f"{self.print_color} {self.print_name}"} if self.print_name != "none" else {}),
        }


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def group_members(seed: int, group: int) -> list[dict[str, object]]:
    """Attributes of the (up to 5) members of a group: shared category/colour/shape, distinct brands."""
    rng = np.random.default_rng([seed, _GROUP_TAG, group])
    category = CATEGORIES[_choice(rng, list(CATEGORIES))]
    color = _choice(rng, list(COLORS))
    aspect = float(rng.uniform(0.85, 1.15))
    features = tuple(str(f) for f in rng.choice(category.features, size=2, replace=False))
    brands = [BRANDS[i] for i in rng.permutation(len(BRANDS))[: GROUP_SIZES[1]]]
    members = []
    for brand in brands:
        members.append(
            {
                "group": group,
                "brand": brand,
                "category": category.name,
                "color": color,
                "material": category.materials[int(rng.integers(len(category.materials)))][0],
                "detail": _choice(rng, category.details),
                "features": features,
                "aspect": aspect,
            }
        )
    return members


ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "tr", "st", "pl", "gl")
VOWELS = ("a", "e", "i", "o", "u", "ai", "io", "ea", "ou")
CODAS = ("", "", "n", "r", "x", "l", "s", "m", "th")


def coined_brand(seed: int, group: int, member: int) -> str:
    """A made-up brand word of 2-3 syllables, the same for the same (seed, group, member)."""
    rng = np.random.default_rng([seed, _COIN_TAG, group, member])
    syllables = int(rng.integers(2, 4))
    word = "".join(_choice(rng, ONSETS) + _choice(rng, VOWELS) for _ in range(syllables)) + _choice(rng, CODAS)
    return word.capitalize()


def catalogue_members(seed: int, group: int, look: Look) -> list[dict[str, object]]:
    """Attributes of the (up to 5) members of a catalogue group: lookalikes or word twins (module docstring)."""
    rng = np.random.default_rng([seed, _GROUP_TAG, group])
    category = CATEGORIES[_choice(rng, list(CATEGORIES))]
    lookalikes = rng.random() < look.lookalike_share
    color = _choice(rng, list(COLORS))
    contrast = [c for c in COLORS if c != color]
    features = tuple(str(f) for f in rng.choice(category.features, size=2, replace=False))
    named = [BRANDS[i] for i in rng.permutation(len(BRANDS))[: GROUP_SIZES[1]]]
    coined = rng.random(GROUP_SIZES[1]) < look.coined_brand_rate
    brands = [coined_brand(seed, group, m) if coined[m] else named[m] for m in range(GROUP_SIZES[1])]
    shared = {
        "print_name": _choice(rng, PRINTS),
        "print_color": _choice(rng, contrast),
        "aspect": float(rng.uniform(0.85, 1.15)),
        "material": category.materials[int(rng.integers(len(category.materials)))][0],
        "detail": _choice(rng, category.details),
    }
    prints = [str(p) for p in rng.permutation(PRINTS)]
    members = []
    for m in range(GROUP_SIZES[1]):
        own = {  # drawn for every member, so a group's draws do not depend on its kind
            "print_name": prints[m],
            "print_color": _choice(rng, contrast),
            "aspect": float(rng.uniform(0.8, 1.2)),
            "material": category.materials[int(rng.integers(len(category.materials)))][0],
            "detail": _choice(rng, category.details),
        }
        if lookalikes:  # one look; brand, material and detail words differ
            member = {**shared, "material": own["material"], "detail": own["detail"], "brand": brands[m]}
        else:  # one brand, material and detail: the same words; print, its colour and shape differ
            member = {**own, "material": shared["material"], "detail": shared["detail"], "brand": brands[0]}
        members.append({"group": group, "category": category.name, "color": color, "features": features, **member})
    return members


def sample_products(seed: int, start: int, count: int, first_group: int, look: Look = CLASSIC) -> list[Product]:
    """`count` products with indices from `start`, in new groups numbered from `first_group`."""
    layout = np.random.default_rng([seed, _LAYOUT_TAG, start])
    products: list[Product] = []
    group = first_group
    while len(products) < count:
        size = int(layout.integers(GROUP_SIZES[0], GROUP_SIZES[1] + 1))
        members = catalogue_members(seed, group, look) if look.mode == "catalogue" else group_members(seed, group)
        for member in members[: min(size, count - len(products))]:
            products.append(Product(index=start + len(products), **member))
        group += 1
    return products


def random_product(rng: np.random.Generator) -> Product:
    """An unrelated product (another item in a live frame or named in a transcript)."""
    category = CATEGORIES[_choice(rng, list(CATEGORIES))]
    return Product(
        index=-1,
        group=-1,
        brand=_choice(rng, BRANDS),
        category=category.name,
        color=_choice(rng, list(COLORS)),
        material=category.materials[int(rng.integers(len(category.materials)))][0],
        detail=_choice(rng, category.details),
        features=(),
        aspect=float(rng.uniform(0.85, 1.15)),
    )
