"""`ampere audit`: the whole chain behind a model version or an index, from raw data to served index.

Every fact comes from a store that the pipeline wrote: MLflow model-version and run tags, the
Dagster instance's run records, the DVC cache and git. Each link is resolved against the store it
points to, and the report says whether it resolved.
"""

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance
from mlflow.exceptions import MlflowException

from mlflow import MlflowClient

DAGSTER_UI = "http://127.0.0.1:3000"


@dataclass
class AuditLine:
    """One fact of the chain, with the link that shows it and whether that link resolved."""

    label: str
    value: str
    link: str = ""
    resolved: bool | None = None


@dataclass
class AuditReport:
    """The chain for one model version."""

    model_version: str
    lines: list[AuditLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every link resolved."""
        return all(line.resolved is not False for line in self.lines)

    def to_text(self) -> str:
        """Human-readable report, one fact a line."""
        width = max(len(line.label) for line in self.lines)
        rows = [f"AMPere audit of model version {self.model_version}"]
        for line in self.lines:
            mark = {True: "ok", False: "UNRESOLVED", None: ""}[line.resolved]
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
    repo: Path = Path("."),
    dagster_ui: str = DAGSTER_UI,
) -> AuditReport:
    """Builds the chain for a model version / alias / index id and resolves every link.

    `repo` is the code repository (for the commit); the data repository is the one recorded in
    the version's `lineage.dvc_repo` tag.
    """
    version_number = resolve_model_version(client, model_name, ref)
    version = client.get_model_version(model_name, version_number)
    tags = version.tags
    run = client.get_run(version.run_id)
    run_tags = run.data.tags
    aliases = ", ".join(version.aliases) or "none"
    report = AuditReport(model_version=version_number)
    add = report.lines.append

    md5 = tags.get("lineage.dvc_md5", "None")
    data_repo = Path(tags.get("lineage.dvc_repo", str(repo)))
    add(AuditLine("data version", tags.get("lineage.data_version", "unknown")))
    add(AuditLine("DVC md5", md5, str(data_repo / "data.dvc"), _dvc_object_exists(data_repo, md5) if md5 != "None" else None))
    add(
        AuditLine(
            "data git revision",
            tags.get("lineage.data_git_rev", "unknown"),
            resolved=_git_has(data_repo, tags.get("lineage.data_git_rev", "")),
        )
    )
    add(AuditLine("dataset", tags.get("lineage.dataset", "unknown")))
    add(AuditLine("prompt", f"{tags.get('lineage.prompt_id', '?')} (hash {tags.get('lineage.prompt_hash', '?')})"))
    add(AuditLine("LLM", tags.get("lineage.llm", "?")))
    add(AuditLine("candidate tagger", tags.get("lineage.tagger", "?")))
    add(AuditLine("text source", tags.get("lineage.text_source", "?")))
    add(AuditLine("backbones", f"{tags.get('lineage.frame_encoder', '?')} + {tags.get('lineage.text_encoder', '?')}"))
    add(AuditLine("code commit", run_tags.get("git_commit", "unknown"), resolved=_git_has(repo, run_tags.get("git_commit", ""))))
    dagster_run = run_tags.get("dagster.run_id", "")
    add(
        AuditLine(
            "Dagster run",
            dagster_run,
            f"{dagster_ui}/runs/{dagster_run}",
            instance.get_run_by_id(dagster_run) is not None if dagster_run else False,
        )
    )
    add(
        AuditLine(
            "MLflow run",
            run.info.run_id,
            f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
            _mlflow_run_exists(client, run.info.run_id),
        )
    )
    add(
        AuditLine(
            "model version",
            f"{model_name} v{version_number} (aliases: {aliases})",
            f"{mlflow_ui}/#/models/{model_name}/versions/{version_number}",
            True,
        )
    )
    metrics = run.data.metrics
    add(AuditLine("mR1 (validation split: model choice)", f"{metrics.get('val/mR1', float('nan')):.2f}"))
    add(AuditLine("mR1 (test split: report)", f"{metrics.get('mR1', float('nan')):.2f}"))
    if "train/best_step" in metrics:
        add(AuditLine("chosen checkpoint", f"step {metrics['train/best_step']:.0f} of {metrics['train/steps_done']:.0f} trained"))
    if "promotion.reason" in tags:
        add(AuditLine("promotion", tags["promotion.reason"]))
    index_path = tags.get("index_path", "")
    add(AuditLine("FAISS index", tags.get("index_id", "none"), index_path, Path(index_path).is_dir() if index_path else None))
    return report


def _git_has(repo: Path, commit: str) -> bool | None:
    if not commit or commit == "unknown":
        return None
    result = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo, capture_output=True)
    return result.returncode == 0


def _dvc_object_exists(repo: Path, md5: str) -> bool:
    """Whether the DVC cache holds the tracked folder's manifest (`<md5>.dir`)."""
    digest = md5.removesuffix(".dir")
    return (repo / ".dvc" / "cache" / "files" / "md5" / digest[:2] / (digest[2:] + ".dir")).exists()


def _mlflow_run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True
