"""The `ampere` console command: the library's commands plus `pipeline`, which runs the Dagster job."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from ampere import cli as library_cli
from ampere.asr.prompts import DEFAULT_PROMPT_ID, PROMPT_DIR
from ampere.catalogue.naming import DEFAULT, Catalogue
from ampere.cli import CACHE_HELP, CATALOGUE_HELP
from ampere.settings import Settings
from orchestration.instance import instance_folder

TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the home's mlflow/mlflow.db)"
# The stages whose config names the device they compute on.
DEVICE_STAGES = ("backbone_features", "trained_encoder", "embeddings")
STORE_HELP = "index store: a folder or an s3:// URL (default: the catalogue's, in the home's workspace)"



def use_dagster_home(settings: Settings) -> Path:
    """Points DAGSTER_HOME at the home's instance (its dagster.yaml built from the project's, on
    PostgreSQL when DAGSTER_POSTGRES_URL is set: `orchestration.instance`), so `ampere`, `dagster dev`
    and the daemon see the same runs."""
    folder = instance_folder(settings.dagster_home)
    os.environ["DAGSTER_HOME"] = str(folder)
    return folder


def _pipeline(args: argparse.Namespace) -> None:
    use_dagster_home(args.settings)
    from dagster import DagsterEventType, ReexecutionOptions, build_reconstructable_job, execute_job

    from ampere.retrieval.eval import markdown_table
    from orchestration.in_process import signals_kept
    from orchestration.instance import ensure_pools, open_instance
    from orchestration.jobs import DATASET_TAG, PIPELINE_POOLS, SETTINGS_TAG
    from orchestration.resources import MlflowResource, WorkspaceResource
    from orchestration.run_state import process_tags, reap_dead_runs, watching_own_run
    from orchestration.summary_shards import ALL_SHARDS_TAGS

    instance = open_instance()
    settings = {  # the job's definitions (`pipeline_job_at`), recorded on the run for its re-executions
        **args.settings.job_settings(),
        "catalogue": args.catalogue,
    }
    parent = None
    if args.reexecute:
        parent = instance.get_run_by_id(args.reexecute)
        if parent is None:
            raise SystemExit(f"no run {args.reexecute} in the Dagster instance at {os.environ['DAGSTER_HOME']}")
        if SETTINGS_TAG in parent.tags:
            settings = json.loads(parent.tags[SETTINGS_TAG])
        else:
            print(f"run {args.reexecute} recorded no settings: re-executing with this command's dataset, folders and summarizer")
    out = settings["workspace"]
    job = build_reconstructable_job("orchestration.definitions", "pipeline_job_at", reconstructable_kwargs=settings)
    ensure_pools(instance, PIPELINE_POOLS)
    catalogue = Catalogue.of(settings["dataset"], args.settings.home_dataset, settings.get("catalogue"))
    print(f"catalogue {catalogue.name}: model {catalogue.registered_model}, index store {catalogue.index_store(out)}", flush=True)
    mlflow = MlflowResource(tracking_uri=settings["tracking_uri"], artifact_root=settings["artifact_root"])
    for run_id in reap_dead_runs(instance, mlflow):
        print(f"run {run_id}: its process died; marked failed and its pool slots freed")
    started = time.perf_counter()
    with signals_kept(), watching_own_run(instance, mlflow):
        if parent is not None:
            # Only failed and not-run steps execute, with the parent's settings, config and tags; a
            # killed training resumes from the checkpoint its root run left (trained_encoder).
            tags = {k: v for k, v in parent.tags.items() if k.startswith("ampere/") or k in ALL_SHARDS_TAGS}
            result = execute_job(
                job,
                instance,
                run_config=parent.run_config,
                tags={**tags, **process_tags()},
                reexecution_options=ReexecutionOptions.from_failure(args.reexecute, instance),
            )
        else:
            run_config = {
                "loggers": {"console": {"config": {"log_level": "INFO"}}},
                "ops": {
                    "asr_summaries": {"config": {"run_llm": args.text_source == "summary"}},
                    "training_set": {"config": {"text_source": args.text_source}},
                    "trained_encoder": {"config": dict(args.train)},
                },
            }
            for stage in DEVICE_STAGES:  # the device setting in each stage's own config (`--train device=…` wins)
                run_config["ops"].setdefault(stage, {"config": {}})["config"].setdefault("device", args.settings.device)
            if args.settings.executor == "default":  # Dagster's own executor: steps in this process
                run_config["execution"] = {"config": {"in_process": {}}}
            tags = {
                "ampere/text_source": args.text_source,
                SETTINGS_TAG: json.dumps(settings),
                DATASET_TAG: settings["dataset"],
                **ALL_SHARDS_TAGS,
                **process_tags(),
            }
            result = execute_job(job, instance, run_config=run_config, tags=tags)
    total = time.perf_counter() - started
    print(f"\nDagster run {result.run_id} ({'success' if result.success else 'FAILED'}), stage times:")
    starts: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            seconds = entry.timestamp - starts.get(event.step_key, entry.timestamp)
            print(f"  {event.step_key:<44} {seconds:7.1f} s  {event.event_type.value}")
    print(f"  {'total':<44} {total:7.1f} s")
    if not result.success:
        raise SystemExit("pipeline failed: see the Dagster run above (dagster dev shows its logs)")
    metrics = json.loads(WorkspaceResource(root=out).location("runs", result.run_id, "metrics.json").read_bytes())
    source = instance.get_run_by_id(result.run_id).tags.get("ampere/text_source", "?")
    print(
        f"\nRetrieval on the test split (text source: {source}; model chosen on validation, "
        f"val mR1 {metrics['val/mR1']:.1f}), R@K in %:\n"
    )
    print(markdown_table(metrics))


def _audit(args: argparse.Namespace) -> None:
    use_dagster_home(args.settings)
    from ampere.retrieval.index_store import open_index_store
    from orchestration.audit import audit
    from orchestration.instance import open_instance
    from orchestration.resources import MlflowResource

    catalogue = Catalogue(args.catalogue or DEFAULT)
    resource = MlflowResource(tracking_uri=args.tracking_uri, ui_url=args.mlflow_ui, registered_model=catalogue.registered_model)
    store = open_index_store(args.store)
    report = audit(args.ref, resource.client(), resource.registered_model, resource.ui_base(), open_instance(), store=store)
    print(report.to_text())
    if not report.ok:
        raise SystemExit("some links of the chain did not resolve")


def _index(args: argparse.Namespace) -> None:
    from ampere.retrieval.index_store import open_index_store

    store = open_index_store(args.store)
    if args.index_command == "rollback":
        index_id = store.rollback()
        print(f"serving {index_id} (rolled back)")
        _champion_follows(store.path(index_id), args.tracking_uri)
    elif args.index_command == "history":
        for event in store.history():
            print(json.dumps(event))
    else:
        print(store.current() or "no index is being served yet")


def _champion_follows(index_folder: Path, tracking_uri: str) -> None:
    """Moves the `champion` alias to the model version a served index names, so registry and server agree."""
    from orchestration.resources import MlflowResource

    about = json.loads((index_folder / "manifest.json").read_text()).get("about", {})
    if "model_version" not in about:
        print(f"{index_folder.name} does not name its model version: the champion alias was left where it is")
        return
    resource = MlflowResource(tracking_uri=tracking_uri, registered_model=about["registered_model"])
    resource.client().set_registered_model_alias(resource.registered_model, "champion", about["model_version"])
    print(f"champion: {resource.registered_model} v{about['model_version']}")


def _status(args: argparse.Namespace) -> None:
    from ampere.retrieval.index_store import open_index_store
    from orchestration.mlflow_logging import alias_version, champion_disagreement
    from orchestration.resources import MlflowResource

    catalogue = Catalogue(args.catalogue or DEFAULT)
    resource = MlflowResource(tracking_uri=args.tracking_uri, registered_model=catalogue.registered_model)
    champion = alias_version(resource, "champion")
    line = f"catalogue {catalogue.name}: champion {resource.registered_model} v{champion}" if champion else (
        f"catalogue {catalogue.name}: champion none"
    )
    if champion:
        version = resource.client().get_model_version(resource.registered_model, champion)
        metrics = resource.client().get_run(version.run_id).data.metrics
        named = (("val/mR1", "val mR1"), ("mR1", "test mR1"))
        figures = ", ".join(f"{name} {metrics[key]:.2f}" for key, name in named if key in metrics)
        line += f" ({figures or 'no mR1 recorded'})"
    store = open_index_store(args.store)
    served = store.current()
    if served:
        about = store.about(served)
        line += f"; served index: {served} (model v{about.get('model_version')}, data {about.get('data_version')})"
    else:
        line += "; served index: none"
    print(line)
    found = champion_disagreement(resource, store)
    if found:
        print(
            f"WARNING: the champion alias (v{found[0]}) and the served index (model v{found[1]}) disagree: a promotion or "
            f"rollback was cut between its two steps; the next promotion or refresh moves the alias to v{found[1]}"
        )
    others = sorted(path.name for path in (args.settings.local_workspace / "catalogues").glob("*") if path.name != catalogue.name)
    if others:
        print(f"other catalogues in this home: {', '.join(others)} (ampere status --catalogue NAME)")


def _wait_run(args: argparse.Namespace) -> None:
    use_dagster_home(args.settings)
    from dagster import DagsterRunStatus, RunsFilter

    from orchestration.instance import open_instance

    key, _, value = args.tag.partition("=")
    instance = open_instance()
    deadline = time.monotonic() + args.timeout
    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    tagged = RunsFilter(tags={key: value})
    already_done = {run.run_id for run in instance.get_runs(filters=tagged) if run.status in finished}
    reported = None
    while time.monotonic() < deadline:
        runs = [run for run in instance.get_runs(filters=tagged, limit=10) if run.run_id not in already_done][:1]
        if runs and runs[0].status != reported:
            reported = runs[0].status
            print(f"run {runs[0].run_id}: {reported.value}", flush=True)
        if runs and runs[0].status in finished:
            if runs[0].status != DagsterRunStatus.SUCCESS:
                raise SystemExit(f"run {runs[0].run_id} ended {runs[0].status.value}")
            return
        time.sleep(5)
    raise SystemExit(f"no finished run tagged {args.tag} within {args.timeout} s")


def train_setting(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` of a TrainConfig field; VALUE parsed as JSON when it is JSON, else kept as text."""
    from ampere.training.train import TrainConfig

    name, sep, raw = text.partition("=")
    known = [f.name for f in fields(TrainConfig)]
    if not sep or name not in known:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {', '.join(known)}; got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def build_parser() -> argparse.ArgumentParser:
    """Library commands plus `pipeline`."""
    parser = library_cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    pipeline = commands.add_parser("pipeline", help="run the whole Dagster job in process on a dataset folder")
    pipeline.add_argument("--dataset", type=Path, help="dataset folder (default: the home's data/)")
    pipeline.add_argument(
        "--out", dest="workspace", help="workspace: a folder or s3:// URL (default: $AMPERE_WORKSPACE, else the home's)"
    )
    pipeline.add_argument("--summary-cache", help=CACHE_HELP)
    pipeline.add_argument(
        "--device",
        help="where features, training and embeddings compute: auto, cpu, cuda, cuda:N (default: $AMPERE_DEVICE, else auto)",
    )
    pipeline.add_argument(
        "--catalogue", help="catalogue name (default: 'default' for the home's dataset, else named after the dataset folder)"
    )
    pipeline.add_argument("--text-source", choices=["summary", "raw", "none"], default="summary")
    pipeline.add_argument(
        "--train",
        type=train_setting,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a TrainConfig field for this run (repeatable; VALUE read as JSON, else as text), e.g. --train steps=300 "
        "--train seed=1 --train device=cuda --train 'lr_factors={\"head\": 0.5}'",
    )
    pipeline.add_argument("--tracking-uri", help=TRACKING_HELP)
    pipeline.add_argument("--artifact-root", help="artifact folder of a sqlite store (default: the home's mlflow/artifacts)")
    pipeline.add_argument("--summarizer-backend", choices=["llamacpp", "vllm", "transformers"], help="default: llamacpp")
    pipeline.add_argument("--summarizer-model", default=None, help="GGUF path / HF model dir / vLLM model name")
    prompts = sorted(p.stem for p in PROMPT_DIR.glob("*.json"))
    pipeline.add_argument("--summarizer-prompt", choices=prompts,
                          help=f"packaged prompt id (a versioned file in ampere/asr/prompts/; default: {DEFAULT_PROMPT_ID})")
    pipeline.add_argument("--summarizer-workers", type=int,
                          help="engine processes over disjoint summary shards (one per GPU on a GPU host; default: 1)")
    pipeline.add_argument(
        "--reexecute",
        metavar="RUN_ID",
        help="re-execute a failed or canceled run from its failure, with its own dataset, folders, summarizer, run "
        "config and tags (a killed training resumes from its checkpoint); the other options are then ignored",
    )
    pipeline.set_defaults(handler=_pipeline)
    audit = commands.add_parser("audit", help="print the chain behind a model version, alias or index id")
    audit.add_argument("ref", help="model version number, alias (champion) or index id")
    audit.add_argument("--tracking-uri", help=TRACKING_HELP)
    audit.add_argument("--catalogue", help=CATALOGUE_HELP)
    audit.add_argument("--store", help=STORE_HELP)
    audit.add_argument("--mlflow-ui", help="MLflow UI for the links (default: the tracking server, else http://127.0.0.1:5000)")
    audit.set_defaults(handler=_audit)
    index = commands.add_parser(
        "index", help="the served FAISS index: current, history, rollback (the champion alias follows the index)"
    )
    index.add_argument("index_command", choices=["current", "rollback", "history"])
    index.add_argument("--catalogue", help=CATALOGUE_HELP)
    index.add_argument("--store", help=STORE_HELP)
    index.add_argument("--tracking-uri", help=TRACKING_HELP + "; rollback moves its champion alias to the index's model")
    index.set_defaults(handler=_index)
    status = commands.add_parser("status", help="the champion model and the served index")
    status.add_argument("--catalogue", help=CATALOGUE_HELP)
    status.add_argument("--store", help=STORE_HELP)
    status.add_argument("--tracking-uri", help=TRACKING_HELP)
    status.set_defaults(handler=_status)
    wait = commands.add_parser(
        "wait-run", help="wait for a Dagster run carrying a tag to finish (runs finished before it started do not count)"
    )
    wait.add_argument("--tag", required=True, help="KEY=VALUE, e.g. ampere/data_version=<md5>")
    wait.add_argument("--timeout", type=int, default=1800)
    wait.set_defaults(handler=_wait_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ampere` console command."""
    args = library_cli.with_settings(build_parser().parse_args(argv))
    args.handler(args)


if __name__ == "__main__":
    main()
