"""Dagster resources: each is configurable, none hard-codes where data, runs or models live."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from dagster import ConfigurableResource, Failure, MetadataValue
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from ampere.asr.backends import MODEL_FIELDS, backend_config, backend_settings, build_summarizer
from ampere.asr.cache import SummaryCache, is_database_url, open_summary_cache
from ampere.asr.candidates import TaggerConfig
from ampere.asr.prompts import DEFAULT_PROMPT_ID, Prompt, load_prompt
from ampere.asr.summarizer import GenerationConfig, Summarizer
from ampere.asr.tagger_store import TaggerStore
from ampere.catalogue.embedding_store import MARKERS as EMBEDDING_MARKERS
from ampere.catalogue.embedding_store import EmbeddingStore
from ampere.data.format import SplitFractions
from ampere.lineage.versions import folder_fingerprint, git_commit
from ampere.retrieval.index_store import IndexStore, open_index_store
from ampere.retrieval.object_index_store import ObjectIndexStore
from ampere.storage import Location
from mlflow import MlflowClient
from orchestration.config import config_from_dataclass, config_from_fields, dataclass_fields, to_dataclass


class WorkspaceResource(ConfigurableResource):
    """Where the pipeline's outputs live: caches shared by content (frame features, summaries), indexes,
    and each run's own files under `runs/<run id>/` (features, embeddings, metrics, quarantine), of
    which the latest are published at the workspace's top level for readers outside Dagster.

    `root` is a folder, or an object-store URL (`s3://bucket/prefix`) that every host of a cluster
    reaches: steps then write in a local mirror (`ampere.storage`), `save` what others read, and read
    what others saved through `ampere.storage.local_copy`."""

    root: str = "workspace"

    def location(self, *parts: str) -> Location:
        """The place at ``parts`` in the workspace (a local path or an object-store URL)."""
        return Location(self.root).child(*parts)

    def run_path(self, run_id: str, *parts: str) -> Path:
        """A local path in the run's own folder, `runs/<run id>/…`: no concurrent run writes there."""
        return self.path("runs", run_id, *parts)

    def _parts(self, path: Path) -> tuple[str, ...]:
        """The workspace parts of a local path this resource gave."""
        return Path(path).relative_to(self.location().local()).parts

    def save(self, path: Path) -> str:
        """Makes a file or folder written at a local path of the workspace readable by every host (uploads
        it to an object store, markers last; nothing to do on a local workspace); returns its URL."""
        place = self.location(*self._parts(path))
        place.push()
        return place.url

    def publish(self, source: Path, *parts: str) -> Path | str:
        """Makes a run's file the workspace's latest at ``parts`` (e.g. `metrics.json`, what DVC and scripts
        read), atomically: a hard link (a copy where the file system has none) renamed into place, so a
        reader sees the old file or the new one. A run's folder (its features) is published as a symbolic link.
        On an object store: the saved objects copied to ``parts``, markers last."""
        if not self.location().is_local:
            target = self.location(*parts)
            self.location(*self._parts(source)).copy_to(target)
            return target.url
        target = self.path(*parts)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        staging.unlink(missing_ok=True)
        if source.is_dir():
            staging.symlink_to(source.resolve(), target_is_directory=True)
            if target.is_dir() and not target.is_symlink():  # a copied workspace holds the folder itself
                shutil.rmtree(target)
        else:
            try:
                os.link(source, staging)
            except OSError:
                shutil.copyfile(source, staging)
        os.replace(staging, target)
        return target

    @contextlib.contextmanager
    def embedding_store(self, model: str, version: str) -> Iterator[EmbeddingStore]:
        """The vectors each model version embedded, by item content (`embedding_store/`), to be used for
        ``model`` version ``version``: on an object store that version's shards are fetched before use and
        its new ones saved after."""
        store = EmbeddingStore(self.folder("embedding_store"))
        place = self.location(*self._parts(store.folder(model, version)))
        place.pull()
        yield store
        place.push(last=EMBEDDING_MARKERS)

    @contextlib.contextmanager
    def taggers(self) -> Iterator[TaggerStore]:
        """The fitted title taggers summaries were read through, by fingerprint (`taggers/`); on an object
        store fetched before use and new ones saved after."""
        place = self.location("taggers")
        yield TaggerStore(place.pull())
        place.push()

    def path(self, *parts: str) -> Path:
        """A local path inside the workspace (its mirror on an object store); parent folders are created."""
        target = self.location(*parts).local()
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def folder(self, *parts: str) -> Path:
        """A local folder inside the workspace (its mirror on an object store), created if missing."""
        target = self.location(*parts).local()
        target.mkdir(parents=True, exist_ok=True)
        return target


class IndexStoreResource(ConfigurableResource):
    """Where published (immutable) FAISS indexes and the atomically swapped CURRENT pointer live."""

    root: str = "workspace/index_store"  # a folder, or an object-store URL (s3://bucket/prefix/index_store)

    def store(self) -> IndexStore | ObjectIndexStore:
        """The index store over `root`."""
        return open_index_store(self.root)


class _DatasetLocation(ConfigurableResource):
    path: str = "data"
    catalogue: str = "default"  # the catalogue this dataset is (`ampere.catalogue.naming`), set by `build_defs`

    def fractions(self) -> SplitFractions:
        """How products without a split (or without validation products) are split."""
        return to_dataclass(SplitFractions, self)


DatasetResource = config_from_dataclass(
    SplitFractions,
    "DatasetResource",
    "Where the raw dataset folder is, and how to split products that carry no split (ampere.data.format.SplitFractions).",
    base=_DatasetLocation,
)


class DvcResource(ConfigurableResource):
    """Reads the DVC data version of the raw dataset (the md5 recorded in the .dvc file)."""

    repo_dir: str = "."
    dvc_file: str = "data.dvc"

    def data_version(self, dataset_path: str) -> dict[str, Any]:
        """The dataset's version: DVC md5 + git revision when `dvc_file` tracks it.

        `data_version` is the DVC md5 of the tracked folder, which must match the working copy
        (`dvc status`; a `Failure` naming the changes otherwise); a folder that `dvc_file` does not
        track (e.g. `ampere pipeline --dataset elsewhere`) is versioned by its content hash.
        """
        repo = Path(self.repo_dir).resolve()
        dvc_path = repo / self.dvc_file
        info: dict[str, Any] = {"dvc_file": None, "dvc_md5": None, "git_rev": git_commit(repo)}
        if dvc_path.exists():
            out = yaml.safe_load(dvc_path.read_text())["outs"][0]
            if (dvc_path.parent / out["path"]).resolve() == Path(dataset_path).resolve():
                _require_in_sync(repo, dvc_path, dataset_path)
                info["dvc_file"] = self.dvc_file
                info["dvc_md5"] = out["md5"]
                info["data_version"] = "dvc:" + out["md5"]
                return info
        info["data_version"] = "content:" + folder_fingerprint(Path(dataset_path))
        return info


def _require_in_sync(repo: Path, dvc_path: Path, dataset_path: str) -> None:
    """Fails unless DVC's own status says the working copy is the version `dvc_path` records."""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", str(dvc_path)], cwd=repo, capture_output=True, text=True
    )
    if status.returncode != 0:
        raise Failure(f"`dvc status {dvc_path.name}` failed in {repo}: {status.stderr.strip() or status.stdout.strip()}")
    changes = json.loads(status.stdout or "{}")
    if changes:
        raise Failure(
            f"the working copy of {dataset_path} is not the version {dvc_path.name} records "
            f"(dvc status: {json.dumps(changes)}); record it with `dvc commit {dvc_path.name}` "
            f"or restore the recorded version with `dvc checkout {dvc_path.name}`",
            metadata={"dvc_status": MetadataValue.json(changes)},
        )


LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
# The MLflow UI opens an experiment of this kind on its training runs (not on the GenAI overview).
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


class MlflowResource(ConfigurableResource):
    """MLflow tracking store and model registry, used through an explicit `MlflowClient`."""

    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    # Where a local store's experiments keep artifacts; a tracking server decides for itself (proxied
    # `mlflow-artifacts:` with `--artifacts-destination`), so this is not used with an http(s) URI.
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "ampere"
    registered_model: str = "ampere-encoder"
    ui_url: str | None = None  # the MLflow UI; default: the tracking server, else `bash mlflow/serve.sh`'s

    def client(self) -> MlflowClient:
        """A client bound to this tracking URI (and registry); one per URI per process."""
        return _client(self.resolved_tracking_uri())

    def resolved_tracking_uri(self) -> str:
        """sqlite paths made absolute, so runs land in one store whatever the working directory."""
        prefix = "sqlite:///"
        if self.tracking_uri.startswith(prefix) and not self.tracking_uri.startswith(prefix + "/"):
            db = Path(self.tracking_uri[len(prefix) :]).resolve()
            db.parent.mkdir(parents=True, exist_ok=True)
            return prefix + str(db)
        return self.tracking_uri

    def is_server(self) -> bool:
        """The tracking URI names a tracking server (several hosts share it), not a store on this host."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def experiment_id(self, name: str | None = None) -> str:
        """The id of the experiment `name` (default: the training runs' experiment), created on first use
        with `artifact_root` as its location for a local store, the server's own for a tracking server."""
        client = self.client()
        name = name or self.experiment
        found: Experiment | None = client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            return found.experiment_id
        location = None
        if not self.is_server():
            location = self.artifact_root if "://" in self.artifact_root else Path(self.artifact_root).resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except MlflowException:  # a concurrent run created it first
            created = client.get_experiment_by_name(name)
            if created is None:
                raise
            return created.experiment_id

    def ui_base(self) -> str:
        """The MLflow UI that shows this store: `ui_url`, else the tracking server itself, else the
        local UI of `bash mlflow/serve.sh`."""
        if self.ui_url:
            return self.ui_url.rstrip("/")
        if self.is_server():
            return self.tracking_uri.rstrip("/")
        return LOCAL_MLFLOW_UI

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to a run in the MLflow UI."""
        return f"{self.ui_base()}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, version: str) -> str:
        """Link to a registered model version in the MLflow UI."""
        return f"{self.ui_base()}/#/models/{self.registered_model}/versions/{version}"


@functools.cache
def _client(uri: str) -> MlflowClient:
    """Opening a sqlite store checks its schema: pay that once, not per call."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class _SummarizerSettings(ConfigurableResource):
    backend: str = "llamacpp"
    model: str | None = None
    prompt_id: str = DEFAULT_PROMPT_ID
    # A SQLite file on one host; a PostgreSQL URL (postgresql://…) where several hosts summarise at once.
    cache_path: str = "workspace/summary_cache.sqlite"
    # Engines summarising disjoint shards at once, one process each (ampere.asr.workers): on a GPU
    # host one per `tensor_parallel_size` GPUs, with llama.cpp a share of the CPU cores each.
    workers: int = 1

    def prompt(self) -> Prompt:
        """The versioned prompt file."""
        return load_prompt(self.prompt_id)

    def cache_location(self) -> str:
        """`cache_path` as another process on this host reads it: a database URL, or the file's absolute path."""
        return self.cache_path if is_database_url(self.cache_path) else str(Path(self.cache_path).resolve())

    def cache(self) -> SummaryCache:
        """The persistent summary cache: a SQLite file, or a PostgreSQL table when `cache_path` is a database URL."""
        return open_summary_cache(self.cache_path)

    def engine_options(self) -> dict[str, Any]:
        """The backend's settings, as `build_summarizer` (here, or in a summary worker) takes them."""
        own = {f.name for f in dataclasses.fields(backend_config(self.backend))}
        options: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationConfig)}
        options |= {f.name: getattr(self, f.name) for f, _ in backend_settings() if f.name in own}
        options = {name: value for name, value in options.items() if value is not None}  # None: the backend's default
        model_field = next(name for name in MODEL_FIELDS if name in own)
        if self.model is not None or model_field == "model":  # vLLM needs its model named
            options[model_field] = self.model
        return options

    def summarizer(self) -> Summarizer:
        """Builds the configured backend (vLLM is only imported when chosen)."""
        return build_summarizer(self.backend, prompt=self.prompt(), **self.engine_options())

    def tagger_config(self) -> TaggerConfig:
        """How the title tagger picks the phrases a "candidates" prompt reads."""
        return to_dataclass(TaggerConfig, self)


_EngineSettings = config_from_fields(
    dataclass_fields(GenerationConfig) + backend_settings(),
    "_EngineSettings",
    "The engine's decoding settings (ampere.asr.summarizer.GenerationConfig) and each backend's own "
    "(ampere.asr.backends); a setting the chosen backend lacks is ignored, and None is the backend's default.",
    base=_SummarizerSettings,
    overrides={"batch_size": (int | None, None), "n_threads": (int | None, None)},
)

SummarizerResource = config_from_dataclass(
    TaggerConfig,
    "SummarizerResource",
    "Which LLM summarises transcripts (backend + model), with which prompt, cached where, and how the title "
    "tagger picks the candidate phrases of a 'candidates' prompt (ampere.asr.candidates.TaggerConfig).",
    base=_EngineSettings,
)
