"""In-process materialisation of the whole asset graph on a tiny generated dataset, with a real
DVC repository, a real MLflow server (sqlite store) and the real packaged LLM and backbones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
import torch
import yaml
from dagster import AssetKey, DagsterInstance

import mlflow
from ampere.asr.backends import build_summarizer
from ampere.asr.cache import cache_key, open_summary_cache
from ampere.asr.candidates import llm_inputs
from ampere.asr.prompts import DEFAULT_PROMPT_ID, load_prompt
from ampere.asr.shards import shard_keys, shard_of
from ampere.asr.summaries import summarize_transcripts
from ampere.data.format import SplitFractions, read_items
from ampere.data.synth import generate
from ampere.models.backbones import build_frame_encoder, build_text_encoder
from ampere.retrieval.eval import DIRECTIONS
from ampere.retrieval.index_store import IndexReader, IndexStore
from ampere.retrieval.query import Query, QueryEncoder, QueryError
from mlflow import MlflowClient
from orchestration.ablation import ABLATION_JOB
from orchestration.assets import PIPELINE_ASSETS
from orchestration.audit import audit
from orchestration.definitions import build_defs, dataset_key
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB
from orchestration.mlflow_logging import load_registered_encoder
from orchestration.resources import MlflowResource
from orchestration.summary_shards import ALL_SHARDS_TAGS

RUN_CONFIG = {"ops": {"trained_encoder": {"config": {"steps": 4, "batch_size": 3, "eval_every": 2}}}}
# 7 products: 3 train, 2 validation (p0004, p0007), 2 test (p0003, p0006).
FRACTIONS = SplitFractions(val_fraction=0.3, test_fraction=0.3)


@pytest.fixture(scope="module")
def materialised(tmp_path_factory: pytest.TempPathFactory, mlflow_server: dict[str, str], make_dvc_repo):
    """Runs the pipeline job once on a 7-product dataset; yields what the tests inspect."""
    root = tmp_path_factory.mktemp("e2e")
    generate(root / "synth", products=7, seed=3, clip_frames=8, fractions=FRACTIONS)
    repo = make_dvc_repo(root / "repo", root / "synth")
    defs = build_defs(
        workspace=str(root / "workspace"),
        dataset=str(repo / "data"),
        tracking_uri=mlflow_server["uri"],
        artifact_root=mlflow_server["artifacts"],
        repo_dir=str(repo),
        catalogue="default",  # the registered model `ampere-encoder` and workspace/index_store
    )
    instance = DagsterInstance.ephemeral()
    job = defs.resolve_job_def(PIPELINE_JOB)
    result = execute_in_process(job, run_config=RUN_CONFIG, instance=instance, tags=ALL_SHARDS_TAGS)
    yield {
        "root": root,
        "repo": repo,
        "defs": defs,
        "instance": instance,
        "result": result,
        "job": job,
        "mlflow": mlflow_server["uri"],
        "mlflow_server": mlflow_server,
    }


def test_every_asset_is_materialised(materialised) -> None:
    instance = materialised["instance"]
    assert materialised["result"].success
    for asset in PIPELINE_ASSETS:
        event = instance.get_latest_materialization_event(asset.key)
        assert event is not None, f"{asset.key} was not materialised"


def test_raw_items_data_version_is_the_dvc_md5(materialised) -> None:
    md5 = yaml.safe_load((materialised["repo"] / "data.dvc").read_text())["outs"][0]["md5"]
    [materialization] = materialised["result"].asset_materializations_for_node("raw_items")
    metadata = materialization.metadata
    assert metadata["dvc_md5"].value == md5
    assert metadata["data_version"].value == f"dvc:{md5}"
    assert metadata["received"].value == metadata["accepted"].value + metadata["quarantined"].value


def test_blocking_check_ran_and_passed(materialised) -> None:
    checks = materialised["result"].get_asset_check_evaluations()
    names = [c.check_name for c in checks]
    assert {name: names.count(name) for name in names} == {
        "asr_summaries_expectations_pass": 17,  # one per shard, in its partition, and their conjunction
        "raw_items_expectations_pass": 1,
        "retrieval_metrics_valid": 1,
        "training_set_expectations_pass": 1,
    }
    shards = sorted(c.partition for c in checks if c.check_name == "asr_summaries_expectations_pass" and c.partition)
    assert shards == shard_keys()
    assert all(c.passed for c in checks)


def test_metrics_json_mlflow_run_and_registered_champion(materialised) -> None:
    workspace = materialised["root"] / "workspace"
    metrics = json.loads((workspace / "metrics.json").read_text())
    figures = {f"{d}/R@{k}" for d in DIRECTIONS for k in (1, 5, 10)} | {"mR1", "mMRR"}
    assert set(metrics) == figures | {f"val/{key}" for key in figures}
    assert 0 < metrics["val/mMRR"] <= 100 and metrics["val/mMRR"] >= metrics["val/mR1"]  # 1/rank >= hit@1
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    assert metrics["mR1"] == pytest.approx(sum(metrics[f"{d}/R@1"] for d in DIRECTIONS) / 6)

    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    champion = client.get_model_version_by_alias("ampere-encoder", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.metrics["mR1"] == pytest.approx(metrics["mR1"])
    assert run.data.metrics["val/mR1"] == pytest.approx(metrics["val/mR1"])
    assert run.data.tags["dagster.run_id"] == materialised["result"].run_id
    assert run.info.status == "FINISHED"  # ended by the last reporting asset, not before
    assert run.data.tags["mlflow.runName"] == f"summary · {run.data.tags['lineage.data_version'][:24]}"
    assert "Dagster run" in run.data.tags["mlflow.note.content"]
    assert "challenger" not in champion.aliases  # moved off the version once it was promoted
    mlflow.set_tracking_uri(materialised["mlflow"])
    signature = mlflow.models.get_model_info(f"runs:/{champion.run_id}/encoder").signature
    assert signature is not None and {spec.name for spec in signature.inputs.inputs} == {"domain", "media", "text"}
    tagger = mlflow.artifacts.load_text(f"runs:/{champion.run_id}/encoder/artifacts/encoder/tagger.json")
    assert json.loads(tagger)["features"]  # the fitted tagger travels with the model
    engine = mlflow.artifacts.load_text(f"runs:/{champion.run_id}/encoder/artifacts/encoder/summarizer.json")
    assert "max_tokens" in json.loads(engine)  # and the settings the LLM summarised with
    [materialization] = materialised["result"].asset_materializations_for_node("trained_encoder")
    plot = materialization.metadata["learning_curve_plot"].value
    assert plot.startswith("![learning curve](data:image/png;base64,") and champion.run_id in plot
    assert run.data.params["steps"] == "4" and run.data.params["resolved_device"] == "cpu"
    assert (run.data.tags["lineage.val_fraction"], run.data.tags["lineage.test_fraction"]) == ("0.2", "0.2")  # the split rule
    for step in ("backbone_features", "embeddings"):
        [materialization] = materialised["result"].asset_materializations_for_node(step)
        assert materialization.metadata["resolved_device"].value == "cpu"  # `auto` on a machine without CUDA
    assert "learning_curve.png" in {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "plots")}
    # The server keeps runs in PostgreSQL and proxies artifacts: no client wrote a location of its own.
    server = materialised["mlflow_server"]
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert any(Path(server["artifacts"]).rglob("learning_curve.png"))
    with psycopg2.connect(server["database"]) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchall() == [("FINISHED",)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "curve/val_mR1")] == [2, 4]


def test_embeddings_and_indexes(materialised) -> None:
    workspace = materialised["root"] / "workspace"
    df = pd.read_parquet(workspace / "embeddings.parquet")
    assert list(df.columns) == ["item_id", "product_id", "domain", "split", "content_key", "embedding"]
    assert len(df) == 21 and len(df["embedding"].iloc[0]) == 128
    assert df.groupby("split")["product_id"].nunique().to_dict() == {"train": 3, "val": 2, "test": 2}
    store = IndexStore(workspace / "index_store")
    served = store.path(store.current())
    assert {p.name for p in served.glob("*.faiss")} == {"page.faiss", "short.faiss", "live.faiss"}
    queries = np.stack(df.loc[df["domain"] == "page", "embedding"].to_list()).astype(np.float32)
    hits = IndexReader(workspace / "index_store").search("short", queries, k=1)
    short = df[df["domain"] == "short"].reset_index(drop=True)
    brute = short.loc[(np.stack(short["embedding"].to_list()) @ queries.T).argmax(axis=0), "item_id"].tolist()
    assert [h[0][0] for h in hits] == brute


def test_rematerialising_summaries_calls_the_llm_zero_times(materialised) -> None:
    result = execute_in_process(
        materialised["job"],
        run_config=RUN_CONFIG,
        instance=materialised["instance"],
        asset_selection=[AssetKey("asr_summaries")],
        tags=ALL_SHARDS_TAGS,
    )
    assert result.success
    event = materialised["instance"].get_latest_materialization_event(AssetKey("asr_summaries"))
    metadata = event.asset_materialization.metadata
    assert metadata["run_llm_calls"].value == 0 and metadata["run_out_of_fold_llm_calls"].value == 0
    assert metadata["run_training_transcripts_out_of_fold"].value > 0
    assert metadata["run_cache_hits"].value + metadata["run_empty"].value == metadata["run_transcripts"].value


def test_a_challenger_that_is_not_better_is_not_promoted_and_the_served_index_stays(materialised) -> None:
    """Training is deterministic on CPU, so re-running the same config yields an equal, not better, challenger."""
    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    champion = client.get_model_version_by_alias("ampere-encoder", "champion").version
    store = IndexStore(materialised["root"] / "workspace" / "index_store")
    served = store.current()
    assert served is not None and served.startswith(f"m{champion}--")
    result = execute_in_process(
        materialised["job"],
        run_config=RUN_CONFIG, instance=materialised["instance"], tags=ALL_SHARDS_TAGS
    )
    assert result.success
    decision = result.output_for_node("champion_promotion")
    assert decision["challenger_version"] != champion
    assert decision["challenger_val_mR1"] == decision["champion_val_mR1"]
    assert decision["promoted"] is False
    assert client.get_model_version_by_alias("ampere-encoder", "champion").version == champion
    assert store.current() == served
    challenger = client.get_model_version("ampere-encoder", decision["challenger_version"])
    assert challenger.tags["promotion.reason"].startswith("not promoted")
    assert store.path(challenger.tags["index_id"]).is_dir()  # published, immutable, but not served


def test_audit_prints_the_whole_chain_and_every_link_resolves(materialised) -> None:
    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    report = audit("champion", client, "ampere-encoder", materialised["mlflow"], materialised["instance"])
    text = report.to_text()
    md5 = yaml.safe_load((materialised["repo"] / "data.dvc").read_text())["outs"][0]["md5"]
    champion = client.get_model_version_by_alias("ampere-encoder", "champion")
    run = client.get_run(champion.run_id)
    assert report.ok, text
    facts = (md5, DEFAULT_PROMPT_ID, "title-tagger@", run.data.tags["dagster.run_id"], champion.run_id, "SmolLM2")
    for fact in (*facts, champion.tags["index_id"]):
        assert fact in text, f"{fact} missing from:\n{text}"
    by_index = audit(champion.tags["index_id"], client, "ampere-encoder", materialised["mlflow"], materialised["instance"])
    assert by_index.model_version == champion.version


def test_audit_fails_naming_each_tampered_link(materialised) -> None:
    """Each link tampered with in its own store, one at a time (and put back): the audit names it."""
    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    champion = client.get_model_version_by_alias("ampere-encoder", "champion")
    run_id, tags = champion.run_id, champion.tags
    run_tags = client.get_run(run_id).data.tags
    md5 = tags["lineage.dvc_md5"].removesuffix(".dir")
    dvc_object = materialised["repo"] / ".dvc" / "cache" / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
    index_file = next(Path(tags["index_path"]).glob("*.faiss"))

    def version_tag(key: str, bad: str):
        set_tag = lambda value: client.set_model_version_tag("ampere-encoder", champion.version, key, value)  # noqa: E731
        return lambda: set_tag(bad), lambda: set_tag(tags[key])

    def run_tag(key: str, bad: str):
        return lambda: client.set_tag(run_id, key, bad), lambda: client.set_tag(run_id, key, run_tags[key])

    def flip_last_byte(path: Path):
        def flip() -> None:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            path.write_bytes(bytes(data))

        return flip, flip

    tampers = {
        "model version": version_tag("lineage.text_source", "raw"),
        "MLflow run": (lambda: client.set_terminated(run_id, "FAILED"), lambda: client.set_terminated(run_id, "FINISHED")),
        "Dagster run": run_tag("dagster.run_id", "00000000-0000-0000-0000-000000000000"),
        "code commit": run_tag("git_commit", "f" * 40),
        "DVC md5": flip_last_byte(dvc_object),
        "data git revision": version_tag("lineage.data_git_rev", "e" * 40),
        "FAISS index": flip_last_byte(index_file),
    }
    for label, (tamper, restore) in tampers.items():
        tamper()
        try:
            report = audit("champion", client, "ampere-encoder", materialised["mlflow"], materialised["instance"])
        finally:
            restore()
        assert label in report.unresolved and not report.ok, (label, report.to_text())
        assert "UNRESOLVED: " in report.to_text()
    report = audit("champion", client, "ampere-encoder", materialised["mlflow"], materialised["instance"])
    assert report.ok, report.to_text()


def test_a_failure_after_training_fails_its_mlflow_run_naming_the_step(materialised, tmp_path) -> None:
    """The index store of a private copy is a file, so faiss_index fails after training: the
    training's MLflow run ends FAILED with the step and the error, not RUNNING forever."""
    copy = _private_copy(materialised, tmp_path)
    shutil.rmtree(copy["workspace"] / "index_store")
    (copy["workspace"] / "index_store").write_text("not a folder")
    result = execute_in_process(
        copy["job"],
        run_config=RUN_CONFIG, instance=copy["instance"], tags=ALL_SHARDS_TAGS, raise_on_error=False
    )
    assert not result.success
    failed = {event.step_key for event in result.all_events if event.is_step_failure}
    assert "faiss_index" in failed
    run_id = result.output_for_node("trained_encoder")["run_id"]
    run = MlflowClient(tracking_uri=materialised["mlflow"]).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failed_step"] == "faiss_index"
    assert "index_store" in run.data.tags["failure"]


def test_a_raw_query_of_an_indexed_item_gives_its_stored_embedding(materialised) -> None:
    """A page image with its title, a short clip and a live frame folder with their transcripts,
    embedded from raw media through `QueryEncoder` (the transcripts summarised through the same
    prompt, tagger and cache), give the champion's stored embeddings."""
    items, _ = read_items(materialised["repo"] / "data", FRACTIONS)
    workspace = materialised["root"] / "workspace"
    stored = pd.read_parquet(workspace / "embeddings.parquet").set_index("item_id")
    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    champion = client.get_model_version_by_alias("ampere-encoder", "champion")
    resource = MlflowResource(tracking_uri=materialised["mlflow"])
    tower = load_registered_encoder(resource, f"models:/ampere-encoder/{champion.version}").tower
    prompt = load_prompt(champion.tags["lineage.prompt_id"])
    llm, cache = build_summarizer("llamacpp", prompt), open_summary_cache(workspace / "summary_cache.sqlite")

    def summarize(transcripts: list[str]) -> list[str]:
        return [result.text for result in summarize_transcripts(prompt, items, transcripts, llm, cache).results]

    encoder = QueryEncoder(tower, build_frame_encoder(), build_text_encoder(), champion.tags["lineage.text_source"], summarize)
    chosen = [
        items[items["domain"] == "page"].iloc[0],
        items[(items["domain"] == "short") & (items["asr"].str.strip() != "")].iloc[0],
        items[(items["domain"] == "live") & (items["asr"].str.strip() != "")].iloc[0],
    ]
    queries = [
        Query(row["domain"], Path(row["media_path"]), row["title"] if row["domain"] == "page" else row["asr"]) for row in chosen
    ]
    vectors = encoder.embed(queries)
    cache.close()
    for row, vector in zip(chosen, vectors, strict=True):
        reference = np.asarray(stored.loc[row["item_id"], "embedding"], dtype=np.float32)
        cosine = float(vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference)))
        assert cosine >= 0.9999, (row["item_id"], cosine)
    with pytest.raises(QueryError, match="unknown domain 'shop'"):
        encoder.embed([Query("shop", queries[0].media)])
    broken = materialised["root"] / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(QueryError, match="query 0 .*broken.png"):
        encoder.embed([Query("page", broken, "a title")])


def test_nothing_before_reporting_reads_a_test_item(materialised) -> None:
    """A copy of the dataset whose test items are changed (the page images and titles of the two test
    products swapped) trains the same weights, chooses the same checkpoint and makes the same
    promotion decision; only the reported test figures see the change."""
    root = materialised["root"]
    changed = root / "test-items-changed"
    shutil.copytree(materialised["repo"] / "data", changed)
    rows = [json.loads(line) for line in (changed / "items.jsonl").read_text().splitlines()]
    pages = [row for row in rows if row["split"] == "test" and row["domain"] == "page"]
    assert len(pages) == 2
    (pages[0]["media"], pages[0]["title"]), (pages[1]["media"], pages[1]["title"]) = (
        (pages[1]["media"], pages[1]["title"]),
        (pages[0]["media"], pages[0]["title"]),
    )
    (changed / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "workspace-changed").mkdir()
    shutil.copy(root / "workspace" / "summary_cache.sqlite", root / "workspace-changed")  # same summaries, no LLM run
    defs = build_defs(
        workspace=str(root / "workspace-changed"),
        dataset=str(changed),
        tracking_uri=materialised["mlflow"],
        artifact_root=str(root / "artifacts-changed"),
        repo_dir=str(materialised["repo"]),
    )
    result = execute_in_process(
        defs.resolve_job_def(PIPELINE_JOB),
        run_config=RUN_CONFIG, instance=materialised["instance"], tags=ALL_SHARDS_TAGS
    )
    assert result.success
    first, second = (r.output_for_node("trained_encoder") for r in (materialised["result"], result))
    client = MlflowClient(tracking_uri=materialised["mlflow"], registry_uri=materialised["mlflow"])
    resource = MlflowResource(tracking_uri=materialised["mlflow"])
    weights = [load_registered_encoder(resource, r["model_uri"]).tower.state_dict() for r in (first, second)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    curves = [[(m.step, m.value) for m in client.get_metric_history(r["run_id"], "curve/val_mR1")] for r in (first, second)]
    assert curves[0] == curves[1] and first["best_val_mR1"] == second["best_val_mR1"]
    decisions = [r.output_for_node("champion_promotion") for r in (materialised["result"], result)]
    assert decisions[1]["challenger_val_mR1"] == decisions[0]["challenger_val_mR1"]
    assert decisions[1]["validation_items"] == decisions[0]["validation_items"] == 6
    embedded = [
        pd.read_parquet(folder / "embeddings.parquet").set_index("item_id")
        for folder in (root / "workspace", root / "workspace-changed")
    ]
    page_id = pages[0]["item_id"]
    assert not np.allclose(embedded[0].loc[page_id, "embedding"], embedded[1].loc[page_id, "embedding"])


def _private_copy(materialised, folder) -> dict:
    """A copy of the git + DVC repository and of the workspace, with its own Dagster instance, for a
    test that edits the dataset: the shared materialisation stays as the other tests expect it."""
    repo, workspace = folder / "repo", folder / "workspace"
    shutil.copytree(materialised["repo"], repo, symlinks=True)
    shutil.copytree(materialised["root"] / "workspace", workspace)
    # Summary shards are kept per dataset folder: the copied dataset takes over the original's.
    summaries = workspace / "summaries"
    (summaries / dataset_key(str(materialised["repo"] / "data"))).rename(summaries / dataset_key(str(repo / "data")))
    defs = build_defs(
        workspace=str(workspace),
        dataset=str(repo / "data"),
        tracking_uri=materialised["mlflow"],
        artifact_root=str(folder / "artifacts"),
        repo_dir=str(repo),
        catalogue="default",  # the copy stands in for the original catalogue (its model, its index store)
    )
    job = defs.resolve_job_def(PIPELINE_JOB)
    return {"repo": repo, "workspace": workspace, "job": job, "instance": DagsterInstance.ephemeral()}


def _dvc_commit(repo) -> str:
    """`dvc commit` of the edited dataset, as its user would record it; the new md5."""
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-q", "-f", "data.dvc"], cwd=repo, check=True, capture_output=True)
    return yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]


def _new_llm_inputs(repo, workspace, shard: str | None = None) -> int:
    """How many distinct LLM inputs of the dataset as it is now (of one shard's items) the summary
    cache lacks: what the next summaries run must pay for, computed independently of the asset."""
    items, _ = read_items(repo / "data", FRACTIONS, check_media=False)
    clips = items[items["domain"] != "page"]
    prompt = load_prompt()
    summarizer = build_summarizer("llamacpp", prompt)
    inputs, _ = llm_inputs(prompt, items, list(clips["asr"]))
    keys = {
        cache_key(text, prompt, summarizer.model_id, summarizer.decoding)
        for item_id, text in zip(clips["item_id"], inputs, strict=True)
        if text and (shard is None or shard_of(item_id) == shard)
    }
    cache = open_summary_cache(workspace / "summary_cache.sqlite")
    cached = cache.get_many(list(keys))
    cache.close()
    return len(keys - set(cached))


def test_changing_transcripts_costs_one_llm_call_per_new_llm_input(materialised, tmp_path) -> None:
    """Two transcripts of a private copy now also say their product's page title, so their candidate
    phrases change. Until the edit is recorded with `dvc commit`, raw_items refuses the working
    copy; then re-materialising the summaries calls the LLM for exactly the LLM inputs (candidate
    phrases) the cache has not seen, and for nothing else."""
    copy = _private_copy(materialised, tmp_path)
    items_path = copy["repo"] / "data" / "items.jsonl"
    rows = [json.loads(line) for line in items_path.read_text().splitlines()]
    titles = {row["product_id"]: row["title"] for row in rows if row["domain"] == "page"}
    assert _new_llm_inputs(copy["repo"], copy["workspace"]) == 0
    changed = [row for row in rows if row["asr"].strip()][:2]
    for row in changed:
        row["asr"] = f"hello family this is the {titles[row['product_id']]} " + row["asr"]
    items_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = _new_llm_inputs(copy["repo"], copy["workspace"])
    assert expected >= 1
    selection = [AssetKey("raw_items"), AssetKey("asr_summaries")]

    def run():
        return execute_in_process(
            copy["job"],
            run_config=RUN_CONFIG,
            instance=copy["instance"],
            asset_selection=selection,
            tags=ALL_SHARDS_TAGS,
            raise_on_error=False,
        )

    refused = run()
    assert not refused.success
    message = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error.to_string()
    assert "is not the version data.dvc records" in message and "dvc commit data.dvc" in message, message
    md5 = _dvc_commit(copy["repo"])
    assert run().success
    metadata = copy["instance"].get_latest_materialization_event(AssetKey("asr_summaries")).asset_materialization.metadata
    assert metadata["run_llm_calls"].value == expected
    assert _new_llm_inputs(copy["repo"], copy["workspace"]) == 0
    raw = copy["instance"].get_latest_materialization_event(AssetKey("raw_items")).asset_materialization.metadata
    original = yaml.safe_load((materialised["repo"] / "data.dvc").read_text())["outs"][0]["md5"]
    assert raw["data_version"].value == f"dvc:{md5}" != f"dvc:{original}"


def test_a_one_shard_rerun_calls_the_llm_for_that_shard_only(materialised, tmp_path) -> None:
    """Two transcripts in two shards of a private copy change (recorded with `dvc commit`);
    re-running one shard calls the LLM for that shard's new inputs only, and training refuses the
    other, stale shard."""
    copy = _private_copy(materialised, tmp_path)
    items_path = copy["repo"] / "data" / "items.jsonl"
    rows = [json.loads(line) for line in items_path.read_text().splitlines()]
    clips = [row for row in rows if row["domain"] != "page" and row["asr"].strip()]
    titles = {row["product_id"]: row["title"] for row in rows if row["domain"] == "page"}

    def edit(row: dict) -> int:
        """Says the product's title in `row`'s transcript; the new LLM inputs of its shard."""
        row["asr"] = f"hello family this is the {titles[row['product_id']]} " + row["asr"]
        items_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return _new_llm_inputs(copy["repo"], copy["workspace"], shard_of(row["item_id"]))

    originals = {row["item_id"]: row["asr"] for row in clips}
    for first in clips:  # the first clip whose edit changes its candidate phrases
        if edit(first):
            break
        first["asr"] = originals[first["item_id"]]
    second = next(row for row in clips if shard_of(row["item_id"]) != shard_of(first["item_id"]))
    edit(second)
    _dvc_commit(copy["repo"])
    expected = _new_llm_inputs(copy["repo"], copy["workspace"], shard_of(first["item_id"]))
    assert expected >= 1
    instance, job = copy["instance"], copy["job"]
    result = execute_in_process(
        job,
        run_config=RUN_CONFIG,
        instance=instance,
        asset_selection=[AssetKey("raw_items"), AssetKey("asr_summaries")],
        partition_key=shard_of(first["item_id"]),
    )
    assert result.success
    metadata = instance.get_latest_materialization_event(AssetKey("asr_summaries")).asset_materialization.metadata
    assert (metadata["run_llm_calls"].value, metadata["run_shards"].value) == (expected, shard_of(first["item_id"]))
    result = execute_in_process(
        job,
        run_config=RUN_CONFIG, instance=instance, asset_selection=[AssetKey("training_set")], raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.error.to_string()
    assert "transcript changed" in message and f"(shards {shard_of(second['item_id'])})" in message


def test_the_ablation_job_trains_each_source_on_the_pipelines_text_encoder_and_tagger(materialised) -> None:
    """`ampere_ablation` over the pipeline's materialisations: one cell per (source, seed); the
    phrases cell reads the phrases of the very tagger the summaries were read through."""
    config = {"sources": ["raw", "phrases"], "seeds": [0], "steps": 2, "batch_size": 3, "eval_every": 1}
    job = materialised["defs"].resolve_job_def(ABLATION_JOB)
    run_config = {"ops": {"ablation_study": {"config": config}}}
    result = execute_in_process(job, run_config=run_config, instance=materialised["instance"])
    cells = result.output_for_node("ablation_study")
    assert sorted(cells["source"]) == ["phrases", "raw"] and cells["val_mR1"].between(0, 100).all()
    [summaries] = materialised["result"].asset_materializations_for_node("asr_summaries")[:1]
    read_through = summaries.metadata["tagger"].value
    assert read_through.startswith("title-tagger@")
    messages = [entry.user_message for entry in materialised["instance"].all_logs(result.run_id)]
    assert any(f"phrases: {read_through} (the summaries read {read_through})" in message for message in messages)


def test_a_training_products_own_title_never_changes_the_text_it_trains_on(materialised, tmp_path) -> None:
    """What a training product's clip trains on (`train_text`) is read out of fold, by a tagger fitted
    without that product (how a tagger's reading depends on a title: test_asr_candidates): it is not the
    reading a query of the clip gets (`text`), and a new page title for the product leaves it as it was."""
    copy = _private_copy(materialised, tmp_path)
    items_path = copy["repo"] / "data" / "items.jsonl"
    rows = [json.loads(line) for line in items_path.read_text().splitlines()]
    items, _ = read_items(copy["repo"] / "data", FRACTIONS, check_media=False)
    train_clips = items[(items["split"] == "train") & (items["domain"] != "page") & (items["asr"].str.strip() != "")]
    selection = [AssetKey("raw_items"), AssetKey("asr_summaries"), AssetKey("training_set")]

    def training_set() -> pd.DataFrame:
        items_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        _dvc_commit(copy["repo"])
        result = execute_in_process(
            copy["job"], run_config=RUN_CONFIG, instance=copy["instance"], asset_selection=selection, tags=ALL_SHARDS_TAGS
        )
        return result.output_for_node("training_set").frame.set_index("item_id")

    before = training_set()
    clips = before.loc[train_clips["item_id"]]
    assert (clips["train_text"] != clips["text"]).all()
    others = before.drop(index=train_clips["item_id"])
    assert (others["train_text"] == others["text"]).all()  # validation, test and page items train on their own text
    product = train_clips["product_id"].iloc[0]
    page = next(r for r in rows if r["product_id"] == product and r["domain"] == "page")
    page["title"] = f"Zorbix Quilted {page['title']}"
    after = training_set()
    own = list(train_clips.loc[train_clips["product_id"] == product, "item_id"])
    assert list(after.loc[own, "train_text"]) == list(before.loc[own, "train_text"])
