"""One training over several processes: the target of `torchrun`.

    torchrun --nproc_per_node N -m ampere.training.launch FEATURES.npz OUT --tower TOWER.json --train TRAIN.json \
        [--backbones BACKBONES.json]

Every rank loads the features and runs `train_tower` on its share of each global batch (NCCL on
GPUs, one per rank by LOCAL_RANK, when the config's device resolves to CUDA; gloo on CPU); rank 0
writes the best tower (`OUT/encoder`, `ampere.models.encoder_io`) and the run's record
(`OUT/result.json`: history, best step, best validation mR1, steps done, stopped early, backbone
ids). With `finetune`, every rank builds its backbones from BACKBONES.json (an `EndToEndSpec`) and
rank 0 also writes their trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from ampere.device import resolve_device
from ampere.models.backbones import encoders_from_ids, save_finetuned
from ampere.models.encoder_io import load_tower, save_tower
from ampere.models.features import ItemFeatures
from ampere.models.tower import TowerConfig
from ampere.training.finetune import EndToEndInputs, EndToEndSpec
from ampere.training.train import TRAINING_SPLITS, TrainConfig, TrainResult, train_tower

RESULT = "result.json"


def run_torchrun(
    features: Path, tower_cfg: TowerConfig, cfg: TrainConfig, folder: Path, backbones: EndToEndSpec | None = None
) -> TrainResult:
    """Trains with `cfg.nproc_per_node` processes of this module under torchrun (files in ``folder``)
    and returns rank 0's result, as `train_tower` would in one process (fine-tuned backbones on the CPU)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tower.json").write_text(json.dumps(tower_cfg.to_dict()))
    (folder / "train.json").write_text(json.dumps(cfg.to_dict()))
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={cfg.nproc_per_node}"]
    command += ["-m", "ampere.training.launch", str(features), str(folder)]
    command += ["--tower", str(folder / "tower.json"), "--train", str(folder / "train.json")]
    if backbones is not None:
        (folder / "backbones.json").write_text(json.dumps(asdict(backbones)))
        command += ["--backbones", str(folder / "backbones.json")]
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:  # shown as it comes (rank 0's progress bar), the end kept for an error
            print(line, end="", flush=True)
            tail.append(line)
    if process.returncode != 0:
        failed = f"torchrun with {cfg.nproc_per_node} processes failed (exit {process.returncode})"
        raise RuntimeError(f"{failed}:\n{''.join(tail)}")
    record = json.loads((folder / RESULT).read_text())
    trained = None
    if backbones is not None:
        encoders = encoders_from_ids(record["frame_encoder"], record["text_encoder"], folder / "encoder")
        trained = EndToEndInputs(*encoders, backbones.media, backbones.texts)
    return TrainResult(
        load_tower(folder / "encoder"),
        record["history"],
        record["best_step"],
        record["best_val_mR1"],
        record["best_val_mMRR"],
        record["steps_done"],
        record["stopped_early"],
        trained,
        record["warnings"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="features folder (ItemFeatures.save; train and val items)")
    parser.add_argument("out", type=Path, help="folder for encoder/ and result.json (written by rank 0)")
    parser.add_argument("--tower", type=Path, required=True, help="TowerConfig as JSON")
    parser.add_argument("--train", type=Path, required=True, help="TrainConfig as JSON")
    parser.add_argument("--backbones", type=Path, default=None, help="EndToEndSpec as JSON (finetune)")
    args = parser.parse_args(argv)
    tower_cfg = TowerConfig.from_dict(json.loads(args.tower.read_text()))
    cfg = TrainConfig(**json.loads(args.train.read_text()))
    cuda = resolve_device(cfg.device).type == "cuda"  # `device: cpu` trains on CPU processes even on a GPU host
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if cuda:  # one GPU per rank
            local = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local)
            cfg = TrainConfig(**{**cfg.to_dict(), "device": f"cuda:{local}"})
        features = ItemFeatures.load(args.features, training=True).only(TRAINING_SPLITS)
        backbones = None
        if args.backbones is not None:
            spec = EndToEndSpec(**json.loads(args.backbones.read_text()))
            backbones = spec.build(str(resolve_device(cfg.device)))
        result = train_tower(features, tower_cfg, cfg, resume=cfg.checkpoint_dir is not None, backbones=backbones)
        if dist.get_rank() == 0:
            save_tower(args.out / "encoder", result.tower, tower_cfg)
            record = {}
            if result.backbones is not None:
                save_finetuned(args.out / "encoder", result.backbones.frame_encoder, result.backbones.text_encoder)
                record |= {"frame_encoder": result.backbones.frame_encoder.id, "text_encoder": result.backbones.text_encoder.id}
            record |= {
                "history": result.history,
                "best_step": result.best_step,
                "best_val_mR1": result.best_val_mR1,
                "best_val_mMRR": result.best_val_mMRR,
                "warnings": result.warnings,
                "steps_done": result.steps_done,
                "stopped_early": result.stopped_early,
                "world_size": dist.get_world_size(),
            }
            (args.out / RESULT).write_text(json.dumps(record, indent=2))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
