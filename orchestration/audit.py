"""`ampere audit`: the whole chain behind a model version or an index, from raw data to served index.

Every link is fetched from the store that holds it (the MLflow registry and tracking store, the
Dagster instance, the DVC cache and git, the index folder) and compared with what the other links
claim; a link that is missing or disagrees is UNRESOLVED, with the reason, and the audit fails.
"""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from dagster import DagsterEventType, DagsterInstance
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from ampere.lineage.hashing import content_hash
from ampere.lineage.versions import CODE_ROOT, DIRTY
from ampere.retrieval.index import verify_manifest
from ampere.retrieval.index_store import IndexStore, index_key
from ampere.retrieval.object_index_store import ObjectIndexStore
from ampere.storage import local_copy
from mlflow import MlflowClient

DAGSTER_UI = "http://127.0.0.1:3000"
REFRESH_COUNTS = ("added", "changed", "removed", "kept", "embedded", "reused")  # what a refreshed index's manifest records


@dataclass
class AuditLine:
    """One fact of the chain, with the link that shows it and whether that link resolved."""

    label: str
    value: str
    link: str = ""
    resolved: bool | None = None
    problem: str = ""


@dataclass
class AuditReport:
    """The chain for one model version."""

    model_version: str
    lines: list[AuditLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every link resolved."""
        return not self.unresolved

    @property
    def unresolved(self) -> list[str]:
        """Labels of the links that are missing or disagree with the others."""
        return [line.label for line in self.lines if line.resolved is False]

    def to_text(self) -> str:
        """Human-readable report, one fact a line."""
        width = max(len(line.label) for line in self.lines)
        rows = [f"AMPere audit of model version {self.model_version}"]
        for line in self.lines:
            mark = {True: "ok", False: f"UNRESOLVED: {line.problem}", None: ""}[line.resolved]
            link = f"  {line.link}" if line.link else ""
            rows.append(f"  {line.label:<{width}}  {line.value}{link}  {mark}".rstrip())
        return "\n".join(rows)


def resolve_model_version(client: MlflowClient, model_name: str, ref: str) -> str:
    """A version number from a number, an alias (`champion`) or an index id (tag `index_id`)."""
    if ref.isdigit():
        return ref
    if "--" in ref:
        for version in client.search_model_versions(f"name='{model_name}'"):
            if version.tags.get("index_id") == ref:
                return str(version.version)
        raise ValueError(f"no version of {model_name} has index id {ref!r}")
    return str(client.get_model_version_by_alias(model_name, ref).version)


def audit(
    ref: str,
    client: MlflowClient,
    model_name: str,
    mlflow_ui: str,
    instance: DagsterInstance,
    repo: Path = CODE_ROOT,
    dagster_ui: str = DAGSTER_UI,
    store: IndexStore | ObjectIndexStore | None = None,
) -> AuditReport:
    """Builds the chain for a model version / alias / index id; fetches every link from its own
    store and compares it with what the other links claim.

    `repo` is the code repository (for the commit); the data repository is the one recorded in
    the version's `lineage.dvc_repo` tag. An index id published in ``store`` (the catalogue's index
    store) is audited from its manifest: a refreshed index names its champion, both data versions and
    the refresh run.
    """
    index_about = store.about(ref) if store is not None and "--" in ref and store.path(ref).is_dir() else None
    if index_about is not None and index_about.get("registered_model") != model_name:
        raise ValueError(f"index {ref} holds vectors of {index_about.get('registered_model')}, not of {model_name}")
    version_number = str(index_about["model_version"]) if index_about else resolve_model_version(client, model_name, ref)
    version = client.get_model_version(model_name, version_number)
    tags = version.tags
    run = _fetch_run(client, version.run_id)
    run_tags = run.data.tags if run else {}
    report = AuditReport(model_version=version_number)
    add = report.lines.append

    md5 = tags.get("lineage.dvc_md5", "None")
    data_repo = Path(tags.get("lineage.dvc_repo", str(repo)))
    data_rev = tags.get("lineage.data_git_rev", "unknown")
    add(AuditLine("data version", tags.get("lineage.data_version", "unknown")))
    if md5 != "None":
        add(_checked("DVC md5", md5, str(data_repo / "data.dvc"), _dvc_problem(data_repo, md5, data_rev)))
    else:
        add(AuditLine("DVC md5", "none (dataset not tracked by DVC: versioned by its content hash)"))
    add(_checked("data git revision", data_rev, "", _commit_problem(data_repo, data_rev)))
    add(AuditLine("dataset", tags.get("lineage.dataset", "unknown")))
    add(AuditLine("prompt", f"{tags.get('lineage.prompt_id', '?')} (hash {tags.get('lineage.prompt_hash', '?')})"))
    add(AuditLine("LLM", tags.get("lineage.llm", "?")))
    add(AuditLine("candidate tagger", tags.get("lineage.tagger", "?")))
    add(AuditLine("text source", tags.get("lineage.text_source", "?")))
    add(AuditLine("backbones", f"{tags.get('lineage.frame_encoder', '?')} + {tags.get('lineage.text_encoder', '?')}"))
    code = run_tags.get("git_commit", "unknown")
    shown = code.replace(DIRTY, " with uncommitted changes, diff ") if DIRTY in code else code
    add(_checked("code commit", shown, "", _commit_problem(repo, code.split(DIRTY)[0])))
    dagster_run = run_tags.get("dagster.run_id", "")
    add(
        _checked(
            "Dagster run",
            dagster_run or "none",
            f"{dagster_ui}/runs/{dagster_run}",
            _dagster_problem(instance, dagster_run, version.run_id, version_number),
        )
    )
    add(
        _checked(
            "MLflow run",
            version.run_id,
            f"{mlflow_ui}/#/experiments/{run.info.experiment_id if run else '?'}/runs/{version.run_id}",
            _run_problem(run, version.run_id),
        )
    )
    aliases = ", ".join(version.aliases) or "none"
    add(
        _checked(
            "model version",
            f"{model_name} v{version_number} (aliases: {aliases})",
            f"{mlflow_ui}/#/models/{model_name}/versions/{version_number}",
            _version_problem(tags, run_tags),
        )
    )
    metrics = run.data.metrics if run else {}
    add(AuditLine("mR1 (validation split: model choice)", _figure(metrics.get("val/mR1"))))
    add(AuditLine("mR1 (test split: report)", _figure(metrics.get("mR1"))))
    if "train/best_step" in metrics:
        trained = _figure(metrics.get("train/steps_done"), "{:.0f}")
        add(AuditLine("chosen checkpoint", f"step {metrics['train/best_step']:.0f} of {trained} trained"))
    if "promotion.reason" in tags:
        add(AuditLine("promotion", tags["promotion.reason"]))
    index_id, index_path = tags.get("index_id", ""), tags.get("index_path", "")
    if index_about is not None and store is not None:
        report.lines.extend(_index_lines(ref, store.path(ref), index_about, version_number, tags, instance, dagster_ui))
    elif index_id:
        problem = _index_problem(local_copy(index_path), index_id, version_number, tags.get("lineage.data_version", ""))
        add(_checked("FAISS index", index_id, index_path, problem))
    else:
        add(AuditLine("FAISS index", "none"))
    return report


def _index_lines(
    index_id: str,
    path: Path,
    about: dict[str, str],
    version: str,
    tags: dict[str, str],
    instance: DagsterInstance,
    dagster_ui: str,
) -> list[AuditLine]:
    """The links of an index read from its manifest: its files and id, its data version (checked in DVC),
    the data the model was trained on and, for a refreshed index, the run that built it and its counts."""
    data_version = about.get("data_version", "")
    lines = [_checked("FAISS index", index_id, str(path), _index_problem(path, index_id, version, data_version))]
    md5, repo, rev = about.get("dvc_md5", "None"), Path(about.get("dvc_repo", ".")), about.get("data_git_rev", "")
    problem = _dvc_problem(repo, md5, rev) if md5 != "None" else ""
    lines.append(_checked("index data version", data_version, str(repo / "data.dvc") if md5 != "None" else "", problem))
    trained_on = tags.get("lineage.data_version", "unknown")
    recorded = about.get("model_data_version", trained_on)
    differs = f"the index records {recorded}" if recorded != trained_on else ""
    lines.append(_checked("model trained on data version", trained_on, "", differs))
    run_id = about.get("refreshed_by_run")
    if run_id:
        problem = _refresh_problem(instance, run_id, index_id)
        lines.append(_checked("refresh run", run_id, f"{dagster_ui}/runs/{run_id}", problem))
        counts = ", ".join(f"{key} {about.get(key, '?')}" for key in REFRESH_COUNTS)
        previous = f"{about.get('previous_index')} (data version {about.get('previous_data_version')})"
        lines.append(AuditLine("refresh", f"{counts}; previous index {previous}"))
    return lines


def _refresh_problem(instance: DagsterInstance, run_id: str, index_id: str) -> str:
    """The Dagster run, fetched from the instance, must have materialised catalogue_index as this index."""
    if instance.get_run_by_id(run_id) is None:
        return f"run {run_id} not found in the Dagster instance"
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key.to_user_string() == "catalogue_index":
            claimed = getattr(materialization.metadata.get("index_id"), "value", None)
            return "" if claimed == index_id else f"its catalogue_index is index {claimed}"
    return "the run materialised no catalogue_index"


def _checked(label: str, value: str, link: str, problem: str) -> AuditLine:
    return AuditLine(label, value, link, resolved=not problem, problem=problem)


def _figure(value: float | None, spec: str = "{:.2f}") -> str:
    return "missing" if value is None else spec.format(value)


def _fetch_run(client: MlflowClient, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _run_problem(run: Run | None, run_id: str) -> str:
    """The MLflow run, fetched from the tracking store: it exists and finished."""
    if run is None:
        return f"run {run_id} not found in the tracking store"
    if run.info.status != "FINISHED":
        return f"run status is {run.info.status}, not FINISHED"
    return ""


def _version_problem(version_tags: dict[str, str], run_tags: dict[str, str]) -> str:
    """The registry's lineage tags of the version must be those its training run recorded."""
    differing = sorted(
        key for key, value in version_tags.items() if key.startswith("lineage.") and run_tags.get(key) != value
    )
    return f"lineage differs from its MLflow run's: {', '.join(differing)}" if differing else ""


def _dagster_problem(instance: DagsterInstance, run_id: str, mlflow_run: str, version: str) -> str:
    """The Dagster run, fetched from the instance, must have materialised trained_encoder as this
    MLflow run and model version."""
    if not run_id:
        return "the MLflow run names no Dagster run"
    if instance.get_run_by_id(run_id) is None:
        return f"run {run_id} not found in the Dagster instance"
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is None or materialization.asset_key.to_user_string() != "trained_encoder":
            continue
        metadata = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
        claimed = (str(metadata.get("mlflow_run_id")), str(metadata.get("model_version")))
        if claimed == (mlflow_run, version):
            return ""
        return f"its trained_encoder is MLflow run {claimed[0]}, model version {claimed[1]}"
    return "the run materialised no trained_encoder"


def _commit_problem(repo: Path, commit: str) -> str:
    if not commit or commit == "unknown":
        return "no commit recorded"
    result = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo, capture_output=True)
    return "" if result.returncode == 0 else f"commit not found in the git repository {repo}"


def _dvc_problem(repo: Path, md5: str, data_rev: str) -> str:
    """The tracked folder's manifest (`<md5>.dir`) is in the DVC cache or a local remote with that
    content hash, and `data.dvc` at the recorded data revision records this md5."""
    digest = md5.removesuffix(".dir")
    stores = [repo / ".dvc" / "cache", *_local_remotes(repo)]
    found = [store / "files" / "md5" / digest[:2] / f"{digest[2:]}.dir" for store in stores]
    found = [path for path in found if path.is_file()]
    if not found:
        return f"{md5} is in neither the DVC cache nor a local remote ({', '.join(map(str, stores))})"
    if content_hash(found[0], "file", algorithm="md5") != digest:
        return f"{found[0]}: content md5 differs from its name"
    shown = subprocess.run(["git", "show", f"{data_rev}:data.dvc"], cwd=repo, capture_output=True, text=True)
    if shown.returncode != 0:
        return f"no data.dvc at data revision {data_rev}"
    recorded = yaml.safe_load(shown.stdout)["outs"][0]["md5"]
    return "" if recorded == md5 else f"data.dvc at {data_rev[:12]} records {recorded}"


def _local_remotes(repo: Path) -> list[Path]:
    """The DVC remotes of `repo` that are local folders (`dvc remote list`)."""
    listed = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=repo, capture_output=True, text=True)
    urls = [line.split()[1] for line in listed.stdout.splitlines() if len(line.split()) >= 2]
    return [Path(url) for url in urls if "://" not in url]


def _index_problem(path: Path, index_id: str, version: str, data_version: str) -> str:
    """The index folder's files match its manifest, and its id names this model and data version."""
    if index_id != index_key(version, data_version):
        return f"the id does not name model version {version} and data version {data_version}"
    try:
        verify_manifest(path)
    except (OSError, KeyError, ValueError) as error:
        return str(error)
    return ""
