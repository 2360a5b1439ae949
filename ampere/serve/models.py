"""The models a server embeds queries with: the registered version each served index names, loaded
through its MLflow pyfunc (`ampere.serve.pyfunc`: the backbones, prompt, tagger and LLM its lineage
records), so a query is embedded exactly as the pipeline embedded the indexed items."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import mlflow
from ampere.data.format import COLUMNS, SplitFractions, read_items
from ampere.retrieval.query import Query, QueryEncoder
from ampere.serve.pyfunc import EncoderModel, ModelUnavailableError
from mlflow import MlflowClient

logger = logging.getLogger(__name__)
RETRY_S = 30.0


@dataclass
class CatalogueItems:
    """The records of a served index's dataset (item_id index), for titles, metadata and media."""

    items: pd.DataFrame

    def __post_init__(self) -> None:
        self.titles: dict[str, str] = dict(zip(self.items["item_id"], self.items["title"], strict=True))

    @classmethod
    def read(cls, dataset: str, lineage: dict[str, str]) -> CatalogueItems:
        """The dataset's records as it reads now (split as ``lineage`` records); none when unreadable."""
        try:
            items, _ = read_items(dataset, SplitFractions.recorded_in(lineage), check_media=False)
        except (OSError, ValueError) as error:
            logger.warning("no item metadata (dataset %s unreadable: %s)", dataset, error)
            items = pd.DataFrame(columns=COLUMNS)
        return cls(items.set_index("item_id", drop=False))


@dataclass
class ServedModel:
    """One registered version ready to embed queries."""

    version: str
    lineage: dict[str, str]
    encoder: QueryEncoder
    lock: threading.Lock  # one embedding at a time: the backbones and the LLM are not thread-safe

    def embed(self, queries: list[Query]) -> np.ndarray:
        """L2-normalised embeddings of raw queries (see `QueryEncoder.embed`)."""
        with self.lock:
            return self.encoder.embed(queries)


def load_query_model(client: MlflowClient, tracking_uri: str, name: str, version: str) -> EncoderModel:
    """Version ``version`` of registered model ``name`` as its pyfunc: raw queries in, embeddings out."""
    uri = f"models:/{name}/{version}"
    try:
        source = client.get_model_version_download_uri(name, version)  # no global registry URI
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
            model = mlflow.pyfunc.load_model(local).unwrap_python_model()
    except (mlflow.exceptions.MlflowException, OSError, KeyError, ValueError) as error:
        raise ModelUnavailableError(f"{uri} cannot be served: {error}") from error
    if not isinstance(model, EncoderModel):
        raise ModelUnavailableError(f"{uri} is not an AMPere encoder but a {type(model).__name__}")
    return model


class RegistryModels:
    """Registered model versions (by registered model name and version, as an index names the model
    its vectors came from), loaded once each and kept. `summary_cache` is the pipeline's summary
    cache file, so an indexed clip's transcript costs no LLM call."""

    def __init__(self, tracking_uri: str, summary_cache: Path):
        self.tracking_uri = tracking_uri
        self.summary_cache = Path(summary_cache)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._failed: dict[tuple[str, str], tuple[float, ModelUnavailableError]] = {}  # (name, version) -> (when, why)
        self._loading = threading.Lock()

    def champion(self, name: str) -> str | None:
        """The version of registered model ``name`` the `champion` alias points to, or None."""
        try:
            return str(self.client.get_model_version_by_alias(name, "champion").version)
        except mlflow.exceptions.MlflowException:
            return None

    def get(self, name: str, version: str) -> ServedModel:
        """The served form of version ``version`` of registered model ``name`` (loaded on first use;
        a failed load is tried again after `RETRY_S`, not on every request)."""
        key = name, version
        model = self._models.get(key)
        if model is not None:
            return model
        with self._loading:
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed[0] < RETRY_S:
                raise failed[1]
            if key not in self._models:
                try:
                    self._models[key] = self._load(name, version)
                except ModelUnavailableError as error:
                    self._failed[key] = (time.monotonic(), error)
                    raise
            return self._models[key]

    def _load(self, name: str, version: str) -> ServedModel:
        uri = f"models:/{name}/{version}"
        model = load_query_model(self.client, self.tracking_uri, name, version)
        model.use_summary_cache(self.summary_cache)
        logger.info("loaded %s (text source %s)", uri, model.lineage["text_source"])
        return ServedModel(version, model.lineage, model.encoder, threading.Lock())
