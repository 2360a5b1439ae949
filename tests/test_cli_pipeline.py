"""`ampere pipeline` on a small hand-made dataset folder (not made by the generator), with bad
records in it: the run succeeds on the good records and quarantines the bad ones with reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
from dagster import DagsterInstance
from PIL import Image

from orchestration.in_process import execute_in_process

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 200), (220, 200, 40), (120, 40, 160), (30, 180, 180)]
SPLITS = ["train", "train", "val", "val", "test", "test"]


def _write_mp4(path: Path, colour: tuple[int, int, int], frames: int = 6) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            array = np.full((64, 64, 3), colour, dtype=np.uint8)
            array[:, : 8 + 6 * i] = 255 - np.array(colour, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _hand_made_dataset(root: Path) -> Path:
    (root / "media").mkdir(parents=True)
    rows = []
    for p, colour in enumerate(COLOURS):
        pid, split = f"prod-{p}", SPLITS[p]
        Image.new("RGB", (96, 96), colour).save(root / "media" / f"{pid}.png")
        _write_mp4(root / "media" / f"{pid}.mp4", colour)
        frames = root / "media" / f"{pid}-live"
        frames.mkdir()
        for f in range(3):
            Image.new("RGB", (48, 48), tuple(min(255, c + 20 * f) for c in colour)).save(frames / f"{f:03d}.jpg")
        rows += [
            {
                "item_id": f"{pid}-P",
                "product_id": pid,
                "domain": "page",
                "title": f"Brand{p} mug ceramic",
                "asr": "",
                "media": f"media/{pid}.png",
                "split": split,
            },
            {
                "item_id": f"{pid}-S",
                "product_id": pid,
                "domain": "short",
                "title": "",
                "asr": f"hello everyone this is the brand{p} mug",
                "media": f"media/{pid}.mp4",
                "split": split,
            },
            {
                "item_id": f"{pid}-L",
                "product_id": pid,
                "domain": "live",
                "title": "",
                "asr": "",
                "media": f"media/{pid}-live",
                "split": split,
            },
        ]
    (root / "media" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    rows.append(
        {
            "item_id": "bad-P",
            "product_id": "bad",
            "domain": "page",
            "title": "x",
            "asr": "",
            "media": "media/broken.png",
            "split": "test",
        }
    )
    rows.append(dict(rows[0]))  # duplicate item_id
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_ampere_pipeline_on_a_hand_made_dataset(tmp_path: Path) -> None:
    """Run from an unrelated folder with only AMPERE_HOME set: the Dagster runs, the MLflow store and
    the workspace all land in that home, nothing in the current directory; the run names its dataset."""
    dataset = _hand_made_dataset(tmp_path / "dataset")
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = home / "workspace"
    env = {**os.environ, "AMPERE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)
    command = [
        str(Path(sys.executable).parent / "ampere"),
        *("pipeline", "--dataset", str(dataset), "--text-source", "raw"),
        *("--train", "steps=2", "--train", "eval_every=1", "--device", "cpu"),
    ]
    result = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "P2S" in result.stdout and "mR1" in result.stdout and "val mR1" in result.stdout
    assert not list(elsewhere.iterdir())
    assert (home / "mlflow" / "mlflow.db").is_file() and (home / "dagster_home" / "dagster.yaml").is_file()
    runs = DagsterInstance.from_config(str(home / "dagster_home")).get_runs()
    assert [run.tags["ampere/dataset"] for run in runs] == [str(dataset)]
    ops = runs[0].run_config["ops"]  # --device: in the config of every stage that computes on one
    assert [ops[stage]["config"]["device"] for stage in ("backbone_features", "trained_encoder", "embeddings")] == ["cpu"] * 3

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mR1"] <= 100.0 and 0.0 <= metrics["val/mR1"] <= 100.0
    embeddings = pd.read_parquet(out / "embeddings.parquet")
    assert sorted(embeddings["item_id"]) == sorted(f"prod-{p}-{d}" for p in range(6) for d in "PSL")
    assert embeddings["embedding"].map(len).eq(128).all()
    assert embeddings["embedding"].iloc[0].dtype == np.float32

    quarantine = [json.loads(line) for line in (out / "quarantine" / "raw_items.jsonl").read_text().splitlines()]
    reasons = {q["item_id"]: q["reason"] for q in quarantine}
    assert set(reasons) == {"bad-P", "prod-0-P"}
    assert "broken.png" in reasons["bad-P"]
    assert "duplicate" in reasons["prod-0-P"]


def test_quarantine_asset_counts_add_up(tmp_path: Path) -> None:
    """The same bad records reach the quarantined_items asset, and received = accepted + quarantined."""
    from dagster import AssetKey, DagsterInstance

    from orchestration.definitions import build_defs
    from orchestration.jobs import PIPELINE_JOB
    from orchestration.summary_shards import ALL_SHARDS_TAGS

    dataset = _hand_made_dataset(tmp_path / "dataset")
    defs = build_defs(
        workspace=str(tmp_path / "out"),
        dataset=str(dataset),
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=str(tmp_path / "artifacts"),
    )
    instance = DagsterInstance.ephemeral()
    run_config = {
        "ops": {
            "asr_summaries": {"config": {"run_llm": False}},
            "training_set": {"config": {"text_source": "none"}},
            "trained_encoder": {"config": {"steps": 1}},
        }
    }
    job = defs.resolve_job_def(PIPELINE_JOB)
    result = execute_in_process(job, run_config=run_config, instance=instance, tags=ALL_SHARDS_TAGS)
    quarantine = result.output_for_node("quarantined_items")
    assert sorted(quarantine["item_id"]) == ["bad-P", "prod-0-P"]
    metadata = instance.get_latest_materialization_event(AssetKey("quarantined_items")).asset_materialization.metadata
    assert metadata["received"].value == 20
    assert metadata["accepted"].value == 18
    assert metadata["quarantined"].value == 2
