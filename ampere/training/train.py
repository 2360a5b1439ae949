"""Training of the shared tower with cross-domain InfoNCE over batches of distinct products.

Objective per batch (P, S, L items of the same products, in-batch negatives): InfoNCE between
the fused embeddings of P-S, P-L and S-L, plus weighted alignment terms (``ampere.training.alignment``)
and, optionally, a CosFace product-id classifier (``ampere.training.cosface``).

The loop is this module; its parts are modules of their own: the input source
(``ampere.training.batches``), the objective (``ampere.training.objective``), the optimizer and its
schedule (``ampere.training.optimizer``), validation and the best weights
(``ampere.training.evaluator``), checkpoints (``ampere.training.checkpoint``) and the torchrun
wrapper (``ampere.training.distributed``).

The budget is counted in optimizer steps (warm-up then cosine over ``steps``). Every
``eval_every`` steps the tower is evaluated on the validation split (mR1, ties broken by mMRR:
``ampere.retrieval.eval.ValidationScore``); the best validation checkpoint is the one returned,
and training stops early after ``patience`` evaluations without improvement. Training reads train and validation items only:
test items are refused. It can checkpoint at every evaluation and resume from the latest
checkpoint, bit-identically on CPU. With ``finetune`` the backbones train too, end to end from
frames and tokens (``ampere.training.finetune``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ampere.device import resolve_device
from ampere.models.features import ItemFeatures
from ampere.models.tower import FUSIONS, AmpereTower, TowerConfig
from ampere.training.batches import BatchSource, batch_rows, feature_source, product_items
from ampere.training.checkpoint import Checkpointer, data_digest
from ampere.training.distributed import distributed_encoder, global_batch_size, rank, rank_share, seed_this_rank
from ampere.training.evaluator import BestWeights, validate
from ampere.training.finetune import EndToEnd, EndToEndInputs, MediaBatches, features_with, freeze_trained, unfreeze
from ampere.training.modality_dropout import drop_modalities, modality_drops
from ampere.training.objective import Objective
from ampere.training.optimizer import build_optimizer, lr_factor, trainable
from ampere.training.selection import validation_warnings

logger = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "val")
ALIGNMENTS = ("branch", "fusion")


@dataclass
class TrainConfig:
    """Optimisation settings of the tower; every field is settable from Dagster run config.

    Defaults chosen on validation splits (docs/results.md): late fusion led token fusion on the
    500-product catalogue-look set; the 60-step budget and branch alignment were set on the
    classic-look default dataset (the best validation mR1 stopped rising by step 40-60, branch
    alignment led fusion alignment by 0.7 ± 1.1 points over 3 seeds).
    """

    steps: int = field(default=60, metadata={"doc": "optimizer step budget (warm-up then cosine to 0 over it)"})
    batch_size: int = field(default=32, metadata={"doc": "distinct products per step (in-batch negatives)"})
    lr: float = field(default=3e-4, metadata={"doc": "base learning rate (AdamW)"})
    weight_decay: float = field(default=0.05, metadata={"doc": "AdamW weight decay of the tower"})
    warmup_steps: int = field(default=10, metadata={"doc": "linear warm-up steps"})
    temperature: float = field(default=0.05, metadata={"doc": "InfoNCE temperature (initial value if learnable)"})
    grad_clip: float = field(default=1.0, metadata={"doc": "gradient norm clip"})
    seed: int = field(default=0, metadata={"doc": "seed of initialisation, sampling and dropout"})
    device: str = field(
        default="auto",
        metadata={"doc": "auto (the device setting, else CUDA with bf16 autocast when present, else CPU), cpu, cuda, cuda:N"},
    )
    nproc_per_node: int = field(
        default=1,
        metadata={"doc": "training processes on this host, each on its share of every batch (torchrun + DDP; one GPU each)"},
    )
    resident_features_gib: float = field(
        default=4.0,
        metadata={
            "doc": "training features up to this size are held on the training device for the run; larger ones are "
            "read from disk a batch at a time (same batches, same results; memory bounded by the batch)"
        },
    )
    eval_every: int = field(default=10, metadata={"doc": "steps between validation evaluations (and checkpoints)"})
    patience: int = field(
        default=3, metadata={"doc": "evaluations without a better validation mR1 before stopping; 0 never stops early"}
    )
    alignment: str = field(
        default="branch", metadata={"doc": "where alignment terms act: branch (before fusion) or fusion (output tokens)"}
    )
    fusion: str = field(
        default="late",
        metadata={
            "doc": "how the tower the pipeline builds fuses frames and text (ampere.models.tower): late (a visual and a "
            "text embedding, weighted by a share fit on validation) or tokens (the paper's fusion transformer over both "
            "branches' tokens)"
        },
    )
    align_tv: float = field(default=0.1, metadata={"doc": "weight of text<->visual alignment within a domain"})
    align_vv: float = field(default=0.1, metadata={"doc": "weight of visual<->visual alignment across domains"})
    align_tt: float = field(default=0.1, metadata={"doc": "weight of text<->text alignment across domains"})
    modality_dropout: float = field(
        default=0.0,
        metadata={
            "doc": "share of training items that lose one whole branch per step, half their frames, half their text "
            "(ampere.training.modality_dropout); 0 disables it"
        },
    )
    learnable_temperature: bool = field(default=False, metadata={"doc": "learn the temperature (log-parameterised, clamped)"})
    cosface_weight: float = field(default=0.0, metadata={"doc": "weight of the CosFace product-id classifier; 0 disables it"})
    cosface_scale: float = field(default=64.0, metadata={"doc": "CosFace scale s"})
    cosface_margin: float = field(default=0.4, metadata={"doc": "CosFace margin m"})
    lr_factors: dict[str, float] = field(
        default_factory=dict, metadata={"doc": "learning-rate factor per tower parameter-name prefix"}
    )
    finetune: bool = field(
        default=False,
        metadata={"doc": "train the backbones too, end to end from frames and tokens (default: frozen cached features)"},
    )
    frame_lr_factor: float = field(default=2e-3, metadata={"doc": "learning-rate factor of the frame backbone (finetune)"})
    text_lr_factor: float = field(default=1e-3, metadata={"doc": "learning-rate factor of the text backbone (finetune)"})
    checkpoint_dir: str | None = field(
        default=None,
        metadata={
            "doc": "folder of the resumable checkpoint written at every evaluation; the pipeline uses one folder per "
            "root run when unset and resumes a checkpoint it finds there"
        },
    )

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.patience < 0:
            raise ValueError("warmup_steps and patience must be >= 0")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """The tower at its best validation evaluation (eval mode) and the record of the run.

    history: one row per evaluation (step, mean losses since the previous one, lr, temperature,
    val_mR1, val_mMRR, val_loss). best_step: the step of the returned weights; stopped_early: the
    patience ran out before the budget; warnings: why validation may not have been able to choose
    (``ampere.training.selection.validation_warnings``). backbones: with ``finetune``, the inputs whose frame and
    text encoders now hold the best weights (frozen again, ids naming those weights); else None.
    """

    tower: AmpereTower
    history: list[dict]
    best_step: int
    best_val_mR1: float
    best_val_mMRR: float
    steps_done: int
    stopped_early: bool
    backbones: EndToEndInputs | None = None
    warnings: list[str] = field(default_factory=list)


def tower_config(features: ItemFeatures, cfg: TrainConfig) -> TowerConfig:
    """The tower for ``features`` (their frame, text and token sizes), fusing as ``cfg.fusion`` says."""
    return TowerConfig(
        visual_dim=features.frames.shape[-1],
        text_dim=features.text.shape[-1],
        text_tokens=features.text.shape[1],
        fusion=cfg.fusion,
    )


@dataclass
class _Run:
    """What one training run steps: the tower, the module the optimizer trains (the tower, or the
    backbones with it), how a batch is encoded (DDP under torchrun), its inputs and its objective."""

    tower: AmpereTower
    model: nn.Module
    encode: Callable
    inputs: BatchSource
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _build_run(
    features: ItemFeatures, train: ItemFeatures, tower_cfg: TowerConfig, cfg: TrainConfig, products: int, backbones
) -> _Run:
    """A fresh tower (seeded by ``cfg.seed``), its inputs (``train``, the train items of ``features``),
    objective and optimizer on ``cfg.device``."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    tower = AmpereTower(tower_cfg).to(device)
    if backbones is None:
        model, inputs, factors = tower, feature_source(train, device, cfg.resident_features_gib), cfg.lr_factors
    else:
        _check_backbones(backbones, features, device)
        model = EndToEnd(unfreeze(backbones), tower)
        inputs = MediaBatches(train, backbones)
        factors = {"frame_backbone": cfg.frame_lr_factor, "text_backbone": cfg.text_lr_factor}
        factors |= {f"tower.{prefix}": factor for prefix, factor in cfg.lr_factors.items()}
    objective = Objective(cfg, tower_cfg.out_dim, products).to(device)
    optimizer, scheduler = build_optimizer(model, objective, cfg, factors)
    return _Run(tower, model, distributed_encoder(model, tower), inputs, objective, optimizer, scheduler, device)


def _step(run: _Run, products: list, batch_size: int, cfg: TrainConfig, step: int) -> dict[str, torch.Tensor]:
    """One optimizer step on the batch of ``step``; the loss and its parts (on the device)."""
    seed_this_rank(cfg.seed, step)  # under torchrun: this rank's dropout masks of this step
    chosen, rows = batch_rows(products, batch_size, cfg.seed, step)
    drops = modality_drops(cfg.modality_dropout, cfg.seed, step, len(rows))
    chosen, rows, drops = rank_share(batch_size, chosen, rows, drops)
    batch = run.inputs.batch(rows)
    if cfg.modality_dropout:  # cached features (never with finetune): frames, text, mask
        frames, text, mask = batch
        frames, mask = drop_modalities(frames, mask, *drops)
        batch = (frames, text, mask)
    with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
        out = run.encode(*batch)
    has_visual = torch.from_numpy(~drops[0]).to(run.device)
    loss, parts = run.objective(out, torch.from_numpy(chosen).to(run.device), has_visual)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable(run.optimizer), cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return {"loss": loss, **parts}


def _evaluation(run: _Run, best: BestWeights, val: ItemFeatures, val_products: list, step: int, cfg: TrainConfig) -> dict:
    """Validate at ``step``, keep the weights if they are the best, and return the history row's scores."""
    temperature = run.objective.temperature_value()
    score, val_loss = validate(run.tower, val, val_products, temperature)
    best.update(score, step, run.model)
    return {
        "temperature": temperature,
        "lr": cfg.lr * lr_factor(step - 1, cfg.warmup_steps, cfg.steps),
        "val_mR1": score.mR1,
        "val_mMRR": score.mMRR,
        "val_loss": val_loss,
        "best_val_mR1": best.score.mR1,
        **({"visual_weight": float(run.tower.visual_weight)} if run.tower.cfg.fusion == "late" else {}),
    }


def train_tower(
    features: ItemFeatures,
    tower_cfg: TowerConfig,
    cfg: TrainConfig,
    on_eval: Callable[[dict], None] | None = None,
    resume: bool = False,
    backbones: EndToEndInputs | None = None,
) -> TrainResult:
    """Train a fresh tower on the "train" items, choosing its weights on the "val" items.

    ``features`` must hold train and val items only (a test item is an error: the test split
    is for reporting). Each step takes a batch of distinct products, each with one random page,
    short and live item (``batch_rows``; products lacking a domain are skipped). Every
    ``eval_every`` steps and at the end: validation score, history row, checkpoint, then
    ``on_eval(row)`` (only for evaluations done by this call). The best validation weights are
    returned (mR1, then mMRR); ties keep the earlier step.

    With ``cfg.checkpoint_dir``, the model, best weights, optimizer, scheduler, history and torch
    RNG state are checkpointed; ``resume=True`` continues from the latest checkpoint there (or
    starts afresh when there is none) and ends exactly as an uninterrupted run; a checkpoint of
    other data or settings is refused (``ampere.training.checkpoint``).

    ``cfg.finetune`` needs ``backbones`` (encoders built on ``cfg.device``, every item's media and
    text): each step then reads its items' frames and tokens, and the backbones train with the tower.
    """
    train, val, products, val_products = _split(features, cfg, resume, backbones)
    batch_size = global_batch_size(cfg.batch_size, len(products))
    run = _build_run(features, train, tower_cfg, cfg, len(products), backbones)
    best, history, step = BestWeights(cfg.patience), [], 0
    checkpoints = None
    if cfg.checkpoint_dir is not None:
        checkpoints = Checkpointer(Path(cfg.checkpoint_dir), tower_cfg.to_dict(), cfg.to_dict(), data_digest(features))
    state = checkpoints.resume() if resume else None
    if state is not None:
        run.load_state_dict(state)
        best.load_state_dict(state)
        history, step = state["history"], state["steps_done"]
    stopped = bool(history) and best.stop
    sums: dict[str, torch.Tensor] = {}
    progress = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", disable=rank() > 0)
    run.model.train()
    while step < cfg.steps and not stopped:
        for k, v in _step(run, products, batch_size, cfg, step).items():  # summed on the device: no host sync per step
            sums[k] = sums.get(k, 0.0) + v.detach()
        step += 1
        progress.update(1)
        if step % cfg.eval_every and step < cfg.steps:
            continue
        val_now = val if backbones is None else features_with(val, backbones)
        since = step - (history[-1]["step"] if history else 0)  # steps since the last evaluation
        means = {k: float(v) / since for k, v in sums.items()}
        row = {"step": step, **means, **_evaluation(run, best, val_now, val_products, step, cfg)}
        stopped = best.stop
        history.append(row)
        progress.set_postfix(val_mR1=f"{row['val_mR1']:.1f}", best=f"{best.score.mR1:.1f}@{best.step}")
        sums = {}
        if checkpoints is not None and rank() == 0:  # every rank holds the same weights: rank 0 writes
            checkpoints.write(step, {**run.state_dict(), **best.state_dict(), "history": history})
        if on_eval is not None and rank() == 0:
            on_eval(row)
    progress.close()
    return _result(run, best, history, step, stopped and step < cfg.steps, len(val_products), backbones)


def _split(features: ItemFeatures, cfg: TrainConfig, resume: bool, backbones: EndToEndInputs | None) -> tuple:
    """(train items, val items, train products, val products), after checking the arguments agree."""
    if resume and cfg.checkpoint_dir is None:
        raise ValueError("resume=True needs cfg.checkpoint_dir")
    if cfg.finetune != (backbones is not None):
        raise ValueError("backbones are given exactly when cfg.finetune is set")
    if cfg.modality_dropout and cfg.finetune:
        raise ValueError("modality_dropout acts on cached features: it cannot be combined with finetune")
    others = sorted(set(features.splits) - set(TRAINING_SPLITS))
    if others:
        raise ValueError(f"train_tower reads train and val items only; got splits {others} (pass features.only(...))")
    train, val = features.only(("train",)), features.only(("val",))
    products, val_products = product_items(train), product_items(val)
    if len(products) < 2:
        raise ValueError(f"need at least 2 train products with page, short and live items, got {len(products)}")
    if len(val_products) < 2:
        raise ValueError(
            f"need at least 2 validation products with page, short and live items, got {len(val_products)} "
            "(mark split 'val' in the dataset or raise its val_fraction)"
        )
    return train, val, products, val_products


def _result(
    run: _Run, best: BestWeights, history: list[dict], step: int, stopped_early: bool, val_products: int, backbones
) -> TrainResult:
    """The run's record with a fresh copy of the tower at its best validation weights (eval mode)."""
    if backbones is not None:
        run.inputs.close()
    run.model.load_state_dict(best.state or run.model.state_dict())
    done = None if backbones is None else freeze_trained(backbones)
    warnings = validation_warnings(history, val_products)
    for warning in warnings:
        logger.warning(warning)
    chosen = AmpereTower(run.tower.cfg).to(run.device)
    chosen.load_state_dict(run.tower.state_dict())
    score = best.score
    return TrainResult(chosen.eval(), history, best.step, score.mR1, score.mMRR, step, stopped_early, done, warnings)


def _check_backbones(backbones: EndToEndInputs, features: ItemFeatures, device: torch.device) -> None:
    """Fine-tuning's inputs cover every item and its encoders sit on the training device."""
    missing = backbones.missing(features.item_ids)
    if missing:
        raise ValueError(f"{len(missing)} items have no media or text to fine-tune on, e.g. {missing[:3]}")
    for encoder in (backbones.frame_encoder, backbones.text_encoder):
        if encoder.device != device:
            raise ValueError(f"backbone {encoder.id} is on {encoder.device}, training on {device}: build it there")
