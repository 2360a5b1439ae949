"""Tiny offline backbones and toy media for tests: a randomly initialised CLIP folder and 4 products' items."""

import torch
from PIL import Image

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
TEXTS = {
    "page": ["red phone case", "green water bottle", "blue power bank", "yellow desk lamp"],
    "short": ["Product name: phone case; Features: red", "", "Product name: power bank; Features: 20000 mAh", ""],
    "live": ["Product name: case; Features: red, slim", "Product name: bottle", "", "Product name: lamp"],
}


def tiny_clip(folder):
    """A randomly initialised tiny CLIP (vision + text towers), its image processor and a byte-level
    BPE tokenizer with no merges (one token per character), all saved to ``folder``."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=40,  # up to 32 text tokens + BOS + EOS: the default max_tokens
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def toy_media(folder):
    """Per product: a page image, and folders of 3 frames for its short and live clips."""
    paths = {}
    for p, colour in enumerate(COLOURS):
        page = folder / f"page-{p}.png"
        Image.new("RGB", (40, 30), colour).save(page)
        paths[p, "page"] = page
        for d, domain in enumerate(("short", "live")):
            clip = folder / f"{domain}-{p}"
            clip.mkdir()
            for f in range(3):
                shade = tuple(min(255, c + 20 * f + 10 * d) for c in colour)
                Image.new("RGB", (36, 36), shade).save(clip / f"{f:02d}.png")
            paths[p, domain] = clip
    return paths
