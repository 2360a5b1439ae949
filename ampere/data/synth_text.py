"""Titles and ASR transcripts of the synthetic generator.

Titles are keyword-stuffed e-commerce titles. Transcripts are lower-case, unpunctuated host
chatter with a short product block (brand, category, colour, material, sometimes the detail)
placed late most of the time, recognition errors on product words, sometimes a second product
named, and some empty transcripts. Under the ``catalogue`` look (``synth_catalog.Look``) the block
starts at a Beta-distributed share of the transcript, and a misheard word gets several edits, or
is merged with the next word or split in two.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ampere.data.synth_catalog import BRANDS, CATEGORIES, CLASSIC, Look, Product, random_product

EMPTY_ASR_RATE = 0.10
OTHER_PRODUCT_RATE = 0.20
LATE_MENTION_RATE = 0.75  # share of transcripts whose product block starts after token 32
LATE_TOKEN = 32
BRAND_ERROR_RATE = 0.35
WORD_ERROR_RATE = 0.15

STUFFING = (
    "2026 New", "Hot Sale", "Free Shipping", "Best Seller", "Limited Time Offer",
    "Official Flagship Store", "Genuine Authentic", "Big Discount", "Fast Delivery", "Gift Idea",
)

CHATTER = (
    "hello hello welcome everyone to the live room",
    "follow the anchor so you do not miss the next drop",
    "link number {link} in the cart",
    "only {price} dollars today the original price is {old}",
    "three two one go go go",
    "countdown {count} seconds left",
    "don't miss out family",
    "give me a like if you can see me",
    "newcomers tap the little yellow cart at the bottom",
    "we only have {stock} pieces in stock",
    "free shipping and seven day returns",
    "the boss is crazy today",
    "okay okay let me check the comments",
    "someone asked about the size yes it fits",
    "buy two get one free",
    "add it to the cart first then pay",
    "the coupon is in the top left corner",
    "stock is refreshing now hurry up",
    "let's go let's go",
    "thank you for the gift baby",
    "sisters look at this look at this",
    "i use this every day myself",
    "the quality is really good you can trust me",
    "we are the official store so don't worry",
    "remember to share the live room with your friends",
    "first ten orders get a free gift",
    "who wants it type one in the comments",
    "this price is only for today",
)
LINK_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

# Product block: one template of each kind, so brand, category, colour and material all appear.
NAMING = ("this one is the {brand} {cat}", "look at this {cat} from {brand}", "{brand} {cat} link {link}")
COLOUR = ("{color} colour very nice {color}", "the {color} one is the best seller", "we have it in {color}")
MATERIAL = ("it is made of {material} you can feel it", "real {material} not the cheap stuff")
EXTRA = ("see the {detail} here", "{brand} {brand} remember the name {brand}", "the {detail} is very practical")
OTHER = ("also the {brand} {cat} in {color} is link {link} very popular", "and the {color} {cat} from {brand} is back too")

SUBSTITUTIONS = (
    ("ph", "f"), ("ck", "k"), ("c", "k"), ("k", "c"), ("s", "z"), ("z", "s"), ("i", "y"), ("y", "i"),
    ("ee", "ea"), ("v", "w"), ("w", "v"), ("l", "r"), ("r", "l"), ("ou", "u"), ("a", "e"), ("e", "a"),
    ("o", "u"), ("th", "d"), ("tion", "shun"),
)
HOMOPHONES = {"red": "read", "blue": "blew", "steel": "steal", "mug": "muck", "case": "kays", "bag": "back"}


def _capitalise(phrase: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in phrase.split())


def title(product: Product, rng: np.random.Generator) -> str:
    """Keyword-stuffed title: brand, category synonyms, attributes and sales phrases."""
    synonyms = [str(s) for s in rng.permutation(CATEGORIES[product.category].synonyms)]
    stuffing = [str(s) for s in rng.choice(STUFFING, size=3, replace=False)]
    parts = [
        "2026 New", product.brand, synonyms[0], product.color, product.material, product.detail,
        *product.features, synonyms[1], stuffing[0], synonyms[2], stuffing[1], stuffing[2],
    ]
    return _capitalise(" ".join(parts))


def misrecognise(word: str, rng: np.random.Generator) -> str:
    """One ASR-like error: a homophone or a character substitution such as c->k, l->r, i->y."""
    if word in HOMOPHONES and rng.random() < 0.5:
        return HOMOPHONES[word]
    options = [(a, b) for a, b in SUBSTITUTIONS if a in word]
    if not options:
        return word + word[-1:]
    old, new = options[int(rng.integers(len(options)))]
    starts = [i for i in range(len(word)) if word.startswith(old, i)]
    at = starts[int(rng.integers(len(starts)))]
    return word[:at] + new + word[at + len(old) :]


def _spoken(phrase: str, rate: float, rng: np.random.Generator, look: Look) -> str:
    """A product phrase as heard: each word misrecognised with probability `rate` (classic: one
    error; catalogue: 1 to `max_edits` errors, or merged with the next word, or split in two)."""
    words, heard, i = phrase.lower().split(), [], 0
    while i < len(words):
        word = words[i]
        if rng.random() < rate:
            if look.mode == "catalogue" and rng.random() < look.merge_split_rate:
                if i + 1 < len(words) and rng.random() < 0.5:
                    heard.append(word + words[i + 1])
                    i += 2
                    continue
                if len(word) >= 5:
                    cut = int(rng.integers(2, len(word) - 1))
                    heard += [word[:cut], word[cut:]]
                    i += 1
                    continue
            edits = 1 if look.mode == "classic" else int(rng.integers(1, look.max_edits + 1))
            for _ in range(edits):
                word = misrecognise(word, rng)
        heard.append(word)
        i += 1
    return " ".join(heard)


def _fill(template: str, product: Product, rng: np.random.Generator, look: Look) -> str:
    synonyms = CATEGORIES[product.category].synonyms
    return template.format(
        brand=_spoken(product.brand, BRAND_ERROR_RATE, rng, look),
        cat=_spoken(synonyms[int(rng.integers(len(synonyms)))], WORD_ERROR_RATE, rng, look),
        color=_spoken(product.color, WORD_ERROR_RATE, rng, look),
        material=_spoken(product.material, WORD_ERROR_RATE, rng, look),
        detail=_spoken(product.detail, WORD_ERROR_RATE, rng, look),
        link=LINK_WORDS[int(rng.integers(len(LINK_WORDS)))],
    )


def _chatter(rng: np.random.Generator) -> str:
    template = CHATTER[int(rng.integers(len(CHATTER)))]
    price = int(rng.integers(9, 300))
    return template.format(
        link=LINK_WORDS[int(rng.integers(len(LINK_WORDS)))],
        price=f"{price}.9",
        old=f"{price * 2 + 40}",
        count=int(rng.integers(3, 11)),
        stock=int(rng.integers(20, 500)),
    )


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def transcript(product: Product, rng: np.random.Generator, live: bool, look: Look = CLASSIC) -> str:
    """A raw ASR transcript: 60-160 words; 35% of live ones 160-330 words; 10% empty."""
    if rng.random() < EMPTY_ASR_RATE:
        return ""
    target = int(rng.integers(60, 141))
    if live and rng.random() < 0.35:
        target = int(rng.integers(160, 321))
    if look.mode == "catalogue":
        lead = int(rng.beta(look.mention_a, look.mention_b) * (target - 20))
    else:
        late = rng.random() < LATE_MENTION_RATE
        lead = int(rng.integers(LATE_TOKEN + 1, target - 20)) if late else int(rng.integers(0, LATE_TOKEN - 10))
    block = [_pick(NAMING, rng), _pick(COLOUR, rng), _pick(MATERIAL, rng)]
    if rng.random() < 0.5:
        block.append(_pick(EXTRA, rng))
    block = [_fill(template, product, rng, look) for template in rng.permutation(block)]

    before: list[str] = []
    while sum(len(s.split()) for s in before) < lead:
        before.append(_chatter(rng))
    after: list[str] = []
    if rng.random() < OTHER_PRODUCT_RATE:
        other = random_product(rng)
        if other.brand == product.brand:
            other = replace(other, brand=BRANDS[(BRANDS.index(other.brand) + 1) % len(BRANDS)])
        after.append(_fill(_pick(OTHER, rng), other, rng, look))
    while sum(len(s.split()) for s in before + block + after) < target:
        after.insert(int(rng.integers(len(after) + 1)), _chatter(rng))
    return " ".join(before + block + after)
