"""The models a server embeds queries with: the registered version each served index names,
rebuilt from its MLflow registry entry with the backbones, prompt, tagger and LLM its lineage
records, so a query is embedded exactly as the pipeline embedded the indexed items."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import mlflow
from ampere.asr.cache import SummaryCache
from ampere.asr.candidates import llm_reader
from ampere.asr.prompts import load_prompt
from ampere.asr.summaries import TranscriptSummarizer
from ampere.asr.summarizer import build_summarizer
from ampere.data.format import read_items
from ampere.models.backbones import ImageEncoder, TextEncoder, encoders_from_ids
from ampere.models.encoder_io import load_tower
from ampere.retrieval.query import Query, QueryEncoder
from mlflow import MlflowClient

logger = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A registered version that cannot be served here; the message names it and the reason."""


@dataclass
class ServedModel:
    """One registered version ready to embed queries; `items` is its dataset (item_id index)."""

    version: str
    lineage: dict[str, str]
    encoder: QueryEncoder
    items: pd.DataFrame
    lock: threading.Lock  # one embedding at a time: the backbones and the LLM are not thread-safe

    def embed(self, queries: list[Query]):
        """L2-normalised embeddings of raw queries (see `QueryEncoder.embed`)."""
        with self.lock:
            return self.encoder.embed(queries)


def _lineage(tags: dict[str, str]) -> dict[str, str]:
    return {key.removeprefix("lineage."): value for key, value in tags.items() if key.startswith("lineage.")}


class RegistryModels:
    """Registered versions of one model, loaded once each and kept; backbones shared between
    versions that read the same ones. `summary_cache` is the pipeline's summary cache file."""

    def __init__(self, tracking_uri: str, registered_model: str, summary_cache: Path):
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        self.summary_cache = Path(summary_cache)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._models: dict[str, ServedModel] = {}
        self._backbones: dict[tuple[str, str], tuple[ImageEncoder, TextEncoder]] = {}
        self._loading = threading.Lock()

    def champion(self) -> str | None:
        """The version the `champion` alias points to, or None."""
        try:
            return str(self.client.get_model_version_by_alias(self.registered_model, "champion").version)
        except mlflow.exceptions.MlflowException:
            return None

    def get(self, version: str) -> ServedModel:
        """The served form of a registered version (loaded on first use)."""
        model = self._models.get(version)
        if model is not None:
            return model
        with self._loading:
            if version not in self._models:
                self._models[version] = self._load(version)
            return self._models[version]

    def _load(self, version: str) -> ServedModel:
        name = f"{self.registered_model} v{version}"
        try:
            lineage = _lineage(self.client.get_model_version(self.registered_model, version).tags)
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.registered_model}/{version}", dst_path=tmp, tracking_uri=self.tracking_uri
                )
                tower = load_tower(Path(local) / "artifacts" / "encoder")
            key = (lineage["frame_encoder"], lineage["text_encoder"])
            if key not in self._backbones:
                self._backbones[key] = encoders_from_ids(*key)
            items, _ = read_items(lineage["dataset"], check_media=False)
        except (mlflow.exceptions.MlflowException, OSError, KeyError, ValueError) as error:
            raise ModelUnavailableError(f"{name} cannot be served: {error}") from error
        summarize = self._summarizer(name, lineage, items) if lineage.get("text_source") == "summary" else None
        encoder = QueryEncoder(tower, *self._backbones[key], lineage["text_source"], summarize)
        logger.info("loaded %s (text source %s)", name, lineage["text_source"])
        return ServedModel(version, lineage, encoder, items.set_index("item_id", drop=False), threading.Lock())

    def _summarizer(self, name: str, lineage: dict[str, str], items: pd.DataFrame):
        """Transcripts -> summaries with the version's prompt, tagger and LLM, through the pipeline's cache."""
        prompt = load_prompt(lineage["prompt_id"])
        if prompt.hash != lineage.get("prompt_hash"):
            trained = lineage.get("prompt_hash")
            raise ModelUnavailableError(f"{name}: prompt {prompt.id} is {prompt.hash} here, {trained} in training")
        reader = llm_reader(prompt, items)
        if reader.lineage != lineage.get("tagger"):
            trained = lineage.get("tagger")
            raise ModelUnavailableError(f"{name}: the tagger fitted here is {reader.lineage}, training used {trained}")
        engine = build_summarizer(lineage["backend"], prompt)
        if engine.model_id != lineage.get("llm"):
            raise ModelUnavailableError(f"{name}: the LLM here is {engine.model_id}, training used {lineage.get('llm')}")

        def summarize(transcripts: list[str]) -> list[str]:
            with contextlib.closing(SummaryCache(self.summary_cache)) as cache:
                done = TranscriptSummarizer(prompt, reader, engine, cache)(transcripts)
            return [result.text for result in done.results]

        return summarize
