"""Drawing of the synthetic generator: product sprites and page / short / live scenes.

A product is drawn once as an RGBA sprite (PIL primitives in unit coordinates): a category shape
in the group colour, a subtle material texture on the body, a small category detail and a brand
label (logo mark + name in PIL's default font). Scenes paste that sprite:
page = clean and centred on white; short = textured background, blur, camera pan and zoom;
live = clutter, a presenter whose hand occludes the product, jitter, sometimes another product,
then blur, colour cast and low resolution (downscale, upscale).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from ampere.data.synth_catalog import COLORS, Product

SPRITE_SIZE = 256
LABEL_COLOR = (245, 243, 235)
TEXT_COLOR = (25, 25, 25)
SKIN_TONES = ((241, 194, 167), (224, 172, 138), (198, 134, 102), (160, 104, 72), (110, 72, 50))
VIDEO_FPS = 8

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]


def _shade(color: RGB, factor: float) -> RGB:
    return tuple(int(min(255, c * factor)) for c in color)  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=16)
def _texture(pattern: str, size: int) -> Image.Image:
    """A transparent RGBA layer with the material pattern (applied only inside the body)."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if pattern == "stripes":
        for x in range(-size, size, 12):
            draw.line([(x, size), (x + size, 0)], fill=(255, 255, 255, 45), width=3)
    elif pattern == "dots":
        for y in range(4, size, 9):
            for x in range(4 + (y // 9 % 2) * 4, size, 9):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 0, 0, 60))
    elif pattern == "hatch":
        for x in range(-size, size, 10):
            draw.line([(x, size), (x + size, 0)], fill=(0, 0, 0, 40), width=1)
            draw.line([(x, 0), (x + size, size)], fill=(0, 0, 0, 40), width=1)
    elif pattern == "brushed":
        for y in range(0, size, 3):
            draw.line([(0, y), (size, y)], fill=(255, 255, 255, 30 if y % 2 else 12), width=1)
    elif pattern == "ribbed":
        for x in range(0, size, 8):
            draw.line([(x, 0), (x, size)], fill=(0, 0, 0, 50), width=2)
    elif pattern == "gloss":
        draw.ellipse([size * 0.3, size * 0.15, size * 0.45, size * 0.85], fill=(255, 255, 255, 80))
    return layer


@lru_cache(maxsize=64)
def _print(name: str, color: RGB, size: int) -> Image.Image:
    """A transparent RGBA layer with a bold print (catalogue look), large enough to survive a small,
    blurred, low-resolution clip frame (applied only inside the body)."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    ink, step = (*color, 235), max(8, size // 8)
    if name == "stripes":
        for x in range(-size, size, step):
            draw.line([(x, size), (x + size, 0)], fill=ink, width=step // 2)
    elif name == "dots":
        for y in range(step // 2, size, step):
            for x in range(step // 2 + (y // step % 2) * step // 2, size, step):
                draw.ellipse([x - step / 4, y - step / 4, x + step / 4, y + step / 4], fill=ink)
    elif name == "checks":
        for y in range(0, size, step):
            for x in range((y // step % 2) * step, size, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=ink)
    elif name == "chevron":
        for y in range(-step, size + step, step):
            draw.line([(0, y), (size / 2, y + step), (size, y)], fill=ink, width=step // 3)
    elif name == "band":
        draw.rectangle([0, size * 0.62, size, size * 0.8], fill=ink)
    elif name == "rings":
        for r in range(step, size, step):
            draw.ellipse([size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r], outline=ink, width=step // 3)
    elif name == "split":
        draw.rectangle([0, 0, size / 2, size], fill=ink)
    elif name == "zigzag":
        for y in range(0, size + step, step):
            points = [(x, y + (step / 2 if (x // step) % 2 else 0)) for x in range(0, size + step, step)]
            draw.line(points, fill=ink, width=step // 4)
    else:
        raise ValueError(f"unknown print {name!r}")
    return layer


class Sketch:
    """Draws on an RGBA sprite in unit coordinates; body shapes also mark the texture mask."""

    def __init__(self, size: int, color: RGB, aspect: float, print_: tuple[str, RGB] | None = None) -> None:
        self.size, self.color, self.aspect, self.print_ = size, color, aspect, print_
        self.outline = _shade(color, 0.55) if sum(color) > 120 else (90, 90, 95)
        self.image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image)
        self.mask = Image.new("L", (size, size), 0)
        self.mask_draw = ImageDraw.Draw(self.mask)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.size * (0.5 + (x - 0.5) * self.aspect), self.size * y

    def box(self, box: Box) -> list[float]:
        return [*self.px(box[0], box[1]), *self.px(box[2], box[3])]

    def width(self, fraction: float) -> int:
        return max(1, round(fraction * self.size))

    def body_rect(self, box: Box, radius: float = 0.0) -> None:
        r = radius * self.size
        self.draw.rounded_rectangle(self.box(box), r, fill=self.color, outline=self.outline, width=self.width(0.012))
        self.mask_draw.rounded_rectangle(self.box(box), r, fill=255)

    def body_ellipse(self, box: Box) -> None:
        self.draw.ellipse(self.box(box), fill=self.color, outline=self.outline, width=self.width(0.012))
        self.mask_draw.ellipse(self.box(box), fill=255)

    def body_polygon(self, points: list[tuple[float, float]]) -> None:
        xy = [self.px(x, y) for x, y in points]
        self.draw.polygon(xy, fill=self.color, outline=self.outline, width=self.width(0.012))
        self.mask_draw.polygon(xy, fill=255)

    def body_arc(self, box: Box, start: float, end: float, width: float) -> None:
        self.draw.arc(self.box(box), start, end, fill=self.color, width=self.width(width))
        self.mask_draw.arc(self.box(box), start, end, fill=255, width=self.width(width))

    def rect(self, box: Box, fill: RGB, radius: float = 0.0) -> None:
        self.draw.rounded_rectangle(self.box(box), radius * self.size, fill=fill, outline=self.outline, width=1)

    def ellipse(self, box: Box, fill: RGB | None, width: float = 0.0) -> None:
        if fill is None:
            self.draw.ellipse(self.box(box), outline=self.outline, width=self.width(width))
        else:
            self.draw.ellipse(self.box(box), fill=fill, outline=self.outline, width=1)

    def polygon(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([self.px(x, y) for x, y in points], fill=fill, outline=self.outline)

    def line(self, points: list[tuple[float, float]], fill: RGB, width: float) -> None:
        self.draw.line([self.px(x, y) for x, y in points], fill=fill, width=self.width(width))

    def texture(self, pattern: str) -> None:
        """Overlay the material pattern (then the print, if any) on everything drawn as body so far."""
        layers = [_texture(pattern, self.size)] + ([_print(*self.print_, self.size)] if self.print_ else [])
        for layer in layers:
            layer = layer.copy()
            layer.putalpha(ImageChops.multiply(layer.getchannel("A"), self.mask))
            self.image.alpha_composite(layer)

    def label(self, box: Box, brand: str) -> None:
        """The brand mark: a light label with a logo shape (fixed per brand) and the brand name."""
        x0, y0, x1, y1 = self.box(box)
        self.draw.rounded_rectangle([x0, y0, x1, y1], 3, fill=LABEL_COLOR, outline=self.outline, width=1)
        h = y1 - y0
        code = sum(brand.encode("utf-8"))
        logo_color = _shade(list(COLORS.values())[code % len(COLORS)], 0.8)
        lx0, ly0, lx1, ly1 = x0 + 0.15 * h, y0 + 0.2 * h, x0 + 0.75 * h, y0 + 0.8 * h
        if code % 3 == 0:
            self.draw.ellipse([lx0, ly0, lx1, ly1], fill=logo_color)
        elif code % 3 == 1:
            self.draw.polygon([((lx0 + lx1) / 2, ly0), (lx1, ly1), (lx0, ly1)], fill=logo_color)
        else:
            cx, cy = (lx0 + lx1) / 2, (ly0 + ly1) / 2
            self.draw.polygon([(cx, ly0), (lx1, cy), (cx, ly1), (lx0, cy)], fill=logo_color)
        room = x1 - (x0 + 0.9 * h) - 2
        size = int(h * 0.8)
        while size > 6 and self.draw.textlength(brand, font=_font(size)) > room:
            size -= 1
        centre = (x0 + 0.9 * h + x1) / 2
        self.draw.text((centre, (y0 + y1) / 2), brand, fill=TEXT_COLOR, font=_font(size), anchor="mm")


# --- category drawings --------------------------------------------------------------------------

GREY = (70, 70, 75)
LIGHT = (235, 235, 232)
METAL = (200, 180, 120)


def _bottle(s: Sketch, p: Product) -> None:
    s.body_rect((0.43, 0.18, 0.57, 0.32), 0.02)
    s.body_rect((0.33, 0.27, 0.67, 0.93), 0.07)
    s.texture(p.texture)
    if p.detail == "flat cap":
        s.rect((0.41, 0.10, 0.59, 0.19), GREY, 0.01)
    elif p.detail == "sport cap":
        s.rect((0.42, 0.13, 0.58, 0.19), GREY, 0.01)
        s.rect((0.475, 0.05, 0.525, 0.13), GREY)
    else:
        s.rect((0.41, 0.12, 0.59, 0.19), GREY, 0.01)
        s.ellipse((0.44, 0.03, 0.56, 0.14), None, 0.02)
    s.label((0.31, 0.50, 0.69, 0.62), p.brand)


def _mug(s: Sketch, p: Product) -> None:
    s.ellipse((0.56, 0.40, 0.84, 0.72), None, 0.05)
    s.body_rect((0.18, 0.28, 0.66, 0.86), 0.04)
    s.texture(p.texture)
    rim = {"gold rim": (212, 175, 55), "silver rim": (192, 192, 200), "black rim": (20, 20, 20)}[p.detail]
    s.rect((0.18, 0.28, 0.66, 0.32), rim)
    s.label((0.23, 0.50, 0.61, 0.62), p.brand)


def _sneaker(s: Sketch, p: Product) -> None:
    s.body_polygon([(0.07, 0.70), (0.09, 0.50), (0.33, 0.45), (0.52, 0.28), (0.72, 0.28),
                    (0.80, 0.44), (0.94, 0.55), (0.94, 0.70)])
    s.texture(p.texture)
    s.rect((0.05, 0.70, 0.96, 0.79), LIGHT, 0.02)
    if p.detail == "contrast heel tab":
        s.rect((0.88, 0.50, 0.95, 0.68), (200, 30, 30))
    lace = (250, 250, 250) if p.detail != "black laces" else (15, 15, 15)
    for k in range(4):
        x = 0.50 + 0.055 * k
        s.line([(x, 0.33 + 0.03 * k), (x + 0.05, 0.37 + 0.03 * k)], lace, 0.015)
    s.label((0.28, 0.54, 0.70, 0.66), p.brand)


def _backpack(s: Sketch, p: Product) -> None:
    s.ellipse((0.40, 0.06, 0.60, 0.22), None, 0.025)
    s.body_rect((0.20, 0.14, 0.80, 0.93), 0.12)
    s.texture(p.texture)
    pocket = _shade(s.color, 0.8)
    if p.detail == "round pocket":
        s.ellipse((0.31, 0.56, 0.69, 0.88), pocket)
    else:
        s.rect((0.31, 0.56, 0.69, 0.87), pocket, 0.03)
    if p.detail == "zip pocket":
        s.line([(0.34, 0.62), (0.66, 0.62)], METAL, 0.012)
    s.label((0.30, 0.30, 0.70, 0.43), p.brand)


def _lipstick(s: Sketch, p: Product) -> None:
    bullet = _shade(s.color, 0.9)
    if p.detail == "slanted tip":
        s.polygon([(0.42, 0.40), (0.42, 0.22), (0.58, 0.12), (0.58, 0.40)], bullet)
    elif p.detail == "round tip":
        s.rect((0.42, 0.20, 0.58, 0.40), bullet)
        s.ellipse((0.42, 0.13, 0.58, 0.27), bullet)
    else:
        s.polygon([(0.42, 0.40), (0.42, 0.24), (0.50, 0.11), (0.58, 0.24), (0.58, 0.40)], bullet)
    s.rect((0.40, 0.38, 0.60, 0.50), METAL)
    s.body_rect((0.33, 0.48, 0.67, 0.94), 0.03)
    s.texture(p.texture)
    s.label((0.30, 0.64, 0.70, 0.76), p.brand)


def _phone_case(s: Sketch, p: Product) -> None:
    s.body_rect((0.28, 0.06, 0.72, 0.94), 0.07)
    s.texture(p.texture)
    s.rect((0.33, 0.11, 0.50, 0.28), GREY, 0.03)
    lenses = [(0.37, 0.14), (0.37, 0.21)] if p.detail != "triple camera" else [(0.35, 0.13), (0.35, 0.20), (0.42, 0.165)]
    for x, y in lenses:
        s.ellipse((x, y, x + 0.06, y + 0.06), (20, 20, 30))
    if p.detail == "ring holder":
        s.ellipse((0.42, 0.46, 0.58, 0.60), None, 0.015)
    s.label((0.31, 0.74, 0.69, 0.85), p.brand)


def _headphones(s: Sketch, p: Product) -> None:
    s.body_arc((0.20, 0.10, 0.80, 0.86), 180, 360, 0.06)
    s.body_rect((0.13, 0.44, 0.30, 0.76), 0.05)
    s.body_rect((0.70, 0.44, 0.87, 0.76), 0.05)
    s.texture(p.texture)
    if p.detail == "boom mic":
        s.line([(0.18, 0.72), (0.28, 0.88), (0.42, 0.90)], GREY, 0.015)
        s.ellipse((0.41, 0.875, 0.46, 0.925), GREY)
    elif p.detail == "foldable hinge":
        for x in (0.215, 0.785):
            s.ellipse((x - 0.035, 0.40, x + 0.035, 0.47), METAL)
    else:
        for x in (0.215, 0.785):
            s.ellipse((x - 0.055, 0.53, x + 0.055, 0.67), None, 0.012)
    s.label((0.33, 0.05, 0.67, 0.16), p.brand)


def _power_bank(s: Sketch, p: Product) -> None:
    s.body_rect((0.12, 0.30, 0.88, 0.70), 0.06)
    s.texture(p.texture)
    if p.detail == "four led dots":
        for k in range(4):
            s.ellipse((0.70 + 0.035 * k, 0.60, 0.725 + 0.035 * k, 0.625), (90, 220, 120))
    elif p.detail == "digital display":
        s.rect((0.68, 0.56, 0.82, 0.65), (15, 25, 20))
    else:
        for y in (0.40, 0.50):
            s.rect((0.86, y, 0.89, y + 0.06), GREY)
    s.label((0.20, 0.38, 0.62, 0.51), p.brand)


DRAWERS: dict[str, Callable[[Sketch, Product], None]] = {
    "bottle": _bottle,
    "mug": _mug,
    "sneaker": _sneaker,
    "backpack": _backpack,
    "lipstick": _lipstick,
    "phone case": _phone_case,
    "headphones": _headphones,
    "power bank": _power_bank,
}


def product_sprite(product: Product, size: int = SPRITE_SIZE) -> Image.Image:
    """The product drawn on a transparent RGBA square."""
    print_ = (product.print_name, COLORS[product.print_color]) if product.print_name != "none" else None
    sketch = Sketch(size, COLORS[product.color], product.aspect, print_)
    DRAWERS[product.category](sketch, product)
    return sketch.image


# --- scenes ---------------------------------------------------------------------------------------


def page_image(sprite: Image.Image, size: int) -> Image.Image:
    """Product page: the product centred on a clean white background."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    side = round(size * 0.9)
    item = sprite.resize((side, side), Image.Resampling.LANCZOS)
    _paste_centred(canvas, item, size / 2, size / 2)
    return canvas


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A coloured, textured backdrop (gradient, stripes, checks or waves) with sensor noise."""
    c1, c2 = rng.integers(40, 220, size=(2, 3))
    y, x = np.mgrid[0:size, 0:size]
    kind = int(rng.integers(4))
    period = int(rng.integers(10, 40))
    if kind == 0:
        t = y / size
    elif kind == 1:
        t = ((x + y) // period) % 2
    elif kind == 2:
        t = ((x // period) + (y // period)) % 2
    else:
        t = 0.5 + 0.5 * np.sin(x / period) * np.cos(y / (period * 0.7))
    t = np.asarray(t, dtype=np.float32)[..., None]
    pixels = c1 * (1 - t) + c2 * t + rng.normal(0.0, 6.0, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _paste_centred(canvas: Image.Image, sprite: Image.Image, cx: float, cy: float) -> None:
    canvas.paste(sprite, (round(cx - sprite.width / 2), round(cy - sprite.height / 2)), sprite)


def short_frames(
    sprite: Image.Image, size: int, count: int, rng: np.random.Generator, scale: float = 1.0
) -> list[Image.Image]:
    """Short video: small product (``scale`` times its classic size) on a textured backdrop, blurred,
    with camera pan and zoom."""
    world_size = round(size * 1.6)
    world = _background(rng, world_size)
    side = round(world_size * rng.uniform(0.22, 0.32) * scale)
    item = sprite.resize((side, side), Image.Resampling.BILINEAR).rotate(
        float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, expand=True
    )
    cx, cy = world_size * (0.5 + rng.uniform(-0.08, 0.08, size=2))
    _paste_centred(world, item, cx, cy)
    world = world.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 1.4))))
    zoom = rng.uniform(0.6, 0.9, size=2) * world_size
    where = rng.uniform(0.3, 0.7, size=(2, 2))  # product position inside the window, start and end
    frames = []
    for t in np.linspace(0.0, 1.0, count):
        w = zoom[0] + (zoom[1] - zoom[0]) * t
        fx, fy = where[0] + (where[1] - where[0]) * t
        ox = float(np.clip(cx - fx * w, 0, world_size - w))
        oy = float(np.clip(cy - fy * w, 0, world_size - w))
        frames.append(world.resize((size, size), Image.Resampling.BILINEAR, box=(ox, oy, ox + w, oy + w)))
    return frames


def _clutter(rng: np.random.Generator, size: int) -> Image.Image:
    """A busy live-room backdrop: wall, table and many random shapes."""
    wall = tuple(int(c) for c in rng.integers(60, 200, size=3))
    scene = Image.new("RGB", (size, size), wall)
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(15, 26))):
        x, y = rng.uniform(-0.1, 1.0, size=2) * size
        w, h = rng.uniform(0.05, 0.3, size=2) * size
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        else:
            draw.ellipse([x, y, x + w, y + h], fill=fill)
    table = tuple(int(c) for c in rng.integers(50, 160, size=3))
    draw.rectangle([0, size * 0.8, size, size], fill=table)
    return scene


def _presenter(scene: Image.Image, skin: RGB, rng: np.random.Generator) -> None:
    """Torso and head of the host, behind the product."""
    size = scene.width
    draw = ImageDraw.Draw(scene)
    shirt = tuple(int(c) for c in rng.integers(0, 256, size=3))
    x = rng.uniform(-0.1, 0.1) * size
    draw.rounded_rectangle([x + size * 0.15, size * 0.38, x + size * 0.85, size * 1.1], size * 0.12, fill=shirt)
    draw.ellipse([x + size * 0.36, size * 0.02, x + size * 0.64, size * 0.38], fill=skin)


def _hand(skin: RGB, side: int) -> Image.Image:
    """A hand (palm, four fingers, thumb) as an RGBA sprite."""
    hand = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(hand)
    edge = _shade(skin, 0.8)
    draw.ellipse([side * 0.1, side * 0.35, side * 0.9, side * 1.0], fill=skin, outline=edge)
    for k in range(4):
        x = side * (0.14 + 0.19 * k)
        draw.rounded_rectangle([x, side * 0.02, x + side * 0.16, side * 0.6], side * 0.08, fill=skin, outline=edge)
    draw.polygon([(side * 0.1, side * 0.7), (0, side * 0.35), (side * 0.12, side * 0.3), (side * 0.3, side * 0.6)],
                 fill=skin, outline=edge)
    return hand


def live_frames(
    sprite: Image.Image,
    other: Image.Image | None,
    size: int,
    count: int,
    rng: np.random.Generator,
    scale: float = 1.0,
) -> list[Image.Image]:
    """Live clip: clutter, presenter, hand occlusion, jitter, optional second product, degraded; the
    product drawn at ``scale`` times its classic size."""
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    scene = _clutter(rng, size)
    _presenter(scene, skin, rng)
    if other is not None:
        side = round(size * rng.uniform(0.2, 0.28))
        corner = size * (0.15 if rng.random() < 0.5 else 0.85)
        _paste_centred(scene, other.resize((side, side), Image.Resampling.BILINEAR), corner, size * 0.78)
    side = round(size * rng.uniform(0.26, 0.38) * scale)
    item = sprite.resize((side, side), Image.Resampling.BILINEAR).rotate(
        float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR, expand=True
    )
    hand = _hand(skin, round(side / scale * 0.7))  # a hand's size, not the product's
    hand_offset = side * np.array([rng.uniform(-0.35, 0.1), rng.uniform(0.05, 0.25)])
    centre = size * np.array([rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.6)])
    low = round(size / rng.uniform(2.5, 4.0))
    blur = float(rng.uniform(0.6, 1.2))
    cast = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, size=3)))
    steps = np.cumsum(rng.normal(0.0, 0.012 * size, size=(count, 2)), axis=0)
    frames = []
    for step in steps:
        frame = scene.copy()
        cx, cy = centre + step
        _paste_centred(frame, item, cx, cy)
        _paste_centred(frame, hand, cx + hand_offset[0], cy + hand_offset[1])
        frame = frame.resize((low, low), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BILINEAR)
        frame = Image.blend(frame.filter(ImageFilter.GaussianBlur(blur)), cast, 0.12)
        frames.append(frame)
    return frames


def write_mp4(path: Path, frames: list[Image.Image], fps: int = VIDEO_FPS) -> None:
    """H.264 (libx264, else mpeg4) yuv420p mp4, single-threaded so the bytes are deterministic."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            # mbtree=0: with x264's SIMD macroblock-tree, identical input gave different bytes here.
            stream.options = {"crf": "26", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
