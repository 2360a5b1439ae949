"""The models a server embeds queries with: the registered version each served index names, loaded
through its MLflow pyfunc (`ampere.serve.pyfunc`: the backbones, prompt, tagger and LLM its lineage
records), so a query is embedded exactly as the pipeline embedded the indexed items."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

import mlflow
from ampere.data.format import COLUMNS, SplitFractions, read_items
from ampere.data.frames import DecodeLimits
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
    decoders: ThreadPoolExecutor  # decoding, bounded by the encoder's limits, runs here, outside the lock

    def embed(self, queries: list[Query]) -> np.ndarray:
        """L2-normalised embeddings of raw queries (see `QueryEncoder.embed`): decoded in the bounded
        pool first, so one slow clip holds a decoder, not the model."""
        frames = self.decoders.submit(self.encoder.decode, queries).result()
        with self.lock:
            return self.encoder.embed(queries, frames)


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
    its vectors came from), loaded on first use; at most ``keep`` stay loaded (the current and the
    previous, so a rollback is instant), the least recently used dropped first, so memory does not
    grow with promotions. `summary_cache` is the pipeline's summary cache file, read (an indexed
    clip's transcript costs no LLM call) and never written: query summaries stay in a bounded cache."""

    def __init__(
        self, tracking_uri: str, summary_cache: str | Path, keep: int = 2, decoding: DecodeLimits | None = None, decoders: int = 2
    ):
        self.tracking_uri = tracking_uri
        self.summary_cache = summary_cache
        self.keep = keep
        self.decoding = decoding or DecodeLimits()
        self.decoders = ThreadPoolExecutor(max_workers=decoders, thread_name_prefix="ampere-decode")
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._models: OrderedDict[tuple[str, str], ServedModel] = OrderedDict()
        self._failed: dict[tuple[str, str], tuple[float, ModelUnavailableError]] = {}  # (name, version) -> (when, why)
        self._loading = threading.Lock()  # one model loads at a time
        self._lock = threading.Lock()

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
        with self._lock:  # bookkeeping only, never held while a model loads
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        with self._loading:
            with self._lock:
                model = self._models.get(key)
            if model is not None:  # another thread loaded it meanwhile
                return model
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed[0] < RETRY_S:
                raise failed[1]
            try:
                model = self._load(name, version)
            except ModelUnavailableError as error:
                self._failed[key] = (time.monotonic(), error)
                raise
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.keep:  # a request still embedding with a dropped one finishes with it
                    dropped, _ = self._models.popitem(last=False)
                    logger.info("unloaded models:/%s/%s (at most %d stay loaded)", *dropped, self.keep)
            return model

    def loaded(self) -> list[tuple[str, str]]:
        """The (name, version) of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def _load(self, name: str, version: str) -> ServedModel:
        uri = f"models:/{name}/{version}"
        model = load_query_model(self.client, self.tracking_uri, name, version)
        model.serve_summaries(self.summary_cache)
        logger.info("loaded %s (text source %s)", uri, model.lineage["text_source"])
        encoder = replace(model.encoder, decode_limits=self.decoding)
        return ServedModel(version, model.lineage, encoder, threading.Lock(), self.decoders)
