"""Product catalogue of the synthetic generator: categories, colours, brands and product groups.

Products come in groups of 3-5 that share category, shape and colour and differ only in brand,
material (a subtle texture) and a small detail. Every random draw comes from a numpy Generator
seeded by (seed, tag, index), so a product or group never depends on how many were generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP_SIZES = (3, 5)  # inclusive range of products per group
_LAYOUT_TAG, _GROUP_TAG = 1, 2


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
    aspect: float  # horizontal stretch of the drawn shape, shared by the group

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


def sample_products(seed: int, start: int, count: int, first_group: int) -> list[Product]:
    """`count` products with indices from `start`, in new groups numbered from `first_group`."""
    layout = np.random.default_rng([seed, _LAYOUT_TAG, start])
    products: list[Product] = []
    group = first_group
    while len(products) < count:
        size = int(layout.integers(GROUP_SIZES[0], GROUP_SIZES[1] + 1))
        for member in group_members(seed, group)[: min(size, count - len(products))]:
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
