"""One query-embedding path: a raw query — a product photo (page), or a video file or frame folder
with an optional transcript (short/live) — becomes the model's embedding through the pipeline's
own code: frame sampling and the frame backbone, the text the model was trained to read (title,
raw transcript or its LLM summary), the text backbone, and the tower."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ampere.data.format import DOMAINS
from ampere.data.frames import DecodeLimits, MediaError
from ampere.models.backbones import ImageEncoder, TextEncoder
from ampere.models.features import ItemFeatures, TextSource, encode_frames, item_frames, text_features, text_inputs
from ampere.models.tower import AmpereTower
from ampere.training.evaluator import embed


class QueryError(ValueError):
    """A query that cannot be embedded; the message names the query and the reason."""


@dataclass(frozen=True)
class Query:
    """One raw query: its domain, its media, and its text (a page's title, a clip's transcript)."""

    domain: str
    media: Path
    text: str = ""


@dataclass
class QueryEncoder:
    """Embeds raw queries as the pipeline embedded its items; `summarize` turns clip transcripts into
    the summaries the model read (needed when `text_source` is "summary"); `decode_limits` bound each
    query's decoding (None: unbounded, for the catalogue's own media)."""

    tower: AmpereTower
    frame_encoder: ImageEncoder
    text_encoder: TextEncoder
    text_source: TextSource
    summarize: Callable[[list[str]], list[str]] | None = None
    decode_limits: DecodeLimits | None = None

    def decode(self, queries: Sequence[Query]) -> list[list[Image.Image]]:
        """Each query's frames, within `decode_limits`: the part of embedding that needs no model (a
        server runs it outside the model's lock)."""
        frames = []
        for number, query in enumerate(queries):
            if query.domain not in DOMAINS:
                raise QueryError(f"query {number}: unknown domain {query.domain!r} (expected one of {DOMAINS})")
            try:
                frames.append(item_frames(query.media, self.decode_limits))
            except (MediaError, OSError) as error:
                raise QueryError(f"query {number} ({query.media}): {type(error).__name__}: {error}") from error
        return frames

    def embed(self, queries: Sequence[Query], frames: list[list[Image.Image]] | None = None) -> np.ndarray:
        """L2-normalised embeddings float32 [len(queries), out_dim], row-aligned with `queries`;
        ``frames``: their frames already decoded (`decode`), else decoded here."""
        frames = self.decode(queries) if frames is None else frames
        visual = encode_frames(frames, self.frame_encoder)
        domains = [query.domain for query in queries]
        clips = [row for row, query in enumerate(queries) if query.domain != "page"]
        summaries = [""] * len(queries)
        if self.text_source == "summary" and clips:
            if self.summarize is None:
                raise QueryError("the model reads summaries of transcripts: a summarize function is needed")
            for row, summary in zip(clips, self.summarize([queries[row].text for row in clips]), strict=True):
                summaries[row] = summary
        titles = [query.text if query.domain == "page" else "" for query in queries]
        transcripts = [query.text if query.domain != "page" else "" for query in queries]
        texts = text_inputs(domains, titles, transcripts, summaries, self.text_source)
        states, mask = text_features(texts, self.text_encoder, progress=False)
        features = ItemFeatures(
            item_ids=[f"query-{row}" for row in range(len(queries))],
            product_ids=[""] * len(queries),
            domains=domains,
            splits=["query"] * len(queries),
            frames=visual,
            text=states,
            text_mask=mask,
        )
        return embed(self.tower, features)
