"""Training of the shared tower with cross-domain InfoNCE over batches of distinct products.

Objective per batch (P, S, L items of the same products, in-batch negatives): InfoNCE between
the fused embeddings of P-S, P-L and S-L, plus weighted alignment terms (``ampere.training.alignment``)
and, optionally, a CosFace product-id classifier (``ampere.training.cosface``).

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
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ampere.device import resolve_device
from ampere.models.features import ItemFeatures
from ampere.models.tower import FUSIONS, AmpereTower, TowerConfig, TowerOutput, late_fused
from ampere.retrieval.eval import ValidationScore, evaluate
from ampere.training.alignment import alignment_losses
from ampere.training.cosface import CosFace
from ampere.training.distributed import gather_rows, rank, seed_this_rank, world_size
from ampere.training.finetune import EndToEnd, EndToEndInputs, MediaBatches, features_with, freeze_trained, unfreeze
from ampere.training.fusion_weight import fit_visual_weight
from ampere.training.losses import Temperature, cross_domain_loss
from ampere.training.modality_dropout import drop_modalities, modality_drops
from ampere.training.selection import validation_warnings

logger = logging.getLogger(__name__)

TRAIN_DOMAINS = ("page", "short", "live")
TRAINING_SPLITS = ("train", "val")
ALIGNMENTS = ("branch", "fusion")
CHECKPOINT_FORMAT = 4
# TrainConfig fields that may differ between a checkpointed run and its resumption.
_RESUME_MAY_CHANGE = ("device", "checkpoint_dir", "nproc_per_node", "resident_features_gib")


@dataclass
class TrainConfig:
    """Optimisation settings of the tower; every field is settable from Dagster run config.

    Defaults chosen on validation splits (README, "Results"): late fusion led token fusion on the
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
        default="auto", metadata={"doc": "auto (CUDA with bf16 autocast when present, else CPU), cpu, cuda, cuda:N"}
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


def product_items(features: ItemFeatures) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per product (sorted by id) with page, short and live items: their row indices per domain."""
    rows: dict[str, dict[str, list[int]]] = {}
    for i, (pid, domain) in enumerate(zip(features.product_ids, features.domains, strict=True)):
        rows.setdefault(pid, {d: [] for d in TRAIN_DOMAINS})[domain].append(i)
    return [
        tuple(np.array(rows[pid][d]) for d in TRAIN_DOMAINS) for pid in sorted(rows) if all(rows[pid][d] for d in TRAIN_DOMAINS)
    ]


def batch_rows(products: list[tuple[np.ndarray, ...]], batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(product indices [B], item rows [3B] as P then S then L) of one step, a pure function of its arguments.

    Steps walk through permutations of the products (one permutation per pass), so every
    product is seen once per pass; each product's item in a domain is drawn at random.
    """
    per_pass = max(1, len(products) // batch_size)
    pass_index, position = divmod(step, per_pass)
    order = np.random.default_rng([seed, pass_index]).permutation(len(products))
    chosen = order[position * batch_size : (position + 1) * batch_size]
    rng = np.random.default_rng([seed, pass_index, position, 1])
    rows = np.array([[rng.choice(products[p][d]) for p in chosen] for d in range(3)]).reshape(-1)
    return chosen, rows


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def param_groups(model: nn.Module, base_lr: float, factors: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer parameter groups with a learning-rate factor per parameter-name prefix.

    A trainable parameter whose dotted name equals a prefix of ``factors`` or starts with
    ``prefix + "."`` gets lr ``base_lr * factor`` (the longest matching prefix wins); the others
    get ``base_lr``. Each group also holds "name" (its prefix, "" for the rest) and "lr_factor".
    Frozen parameters are left out, and so are empty groups; a prefix matching no trainable
    parameter is an error (a typo would otherwise train at the base rate).
    """
    factors = dict(factors or {})
    members: dict[str, list[nn.Parameter]] = {"": [], **{prefix: [] for prefix in factors}}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [p for p in factors if name == p or name.startswith(p + ".")]
        members[max(matches, key=len, default="")].append(param)
    unused = [p for p in factors if not members[p]]
    if unused:
        raise ValueError(f"lr_factors prefixes match no trainable parameter: {unused}")
    return [
        {"params": params, "lr": base_lr * factors.get(name, 1.0), "name": name, "lr_factor": factors.get(name, 1.0)}
        for name, params in members.items()
        if params
    ]


def _text_width(mask: np.ndarray) -> int:
    """Text columns up to the last one that is real text in some row of ``mask`` (at least 1)."""
    return max(1, int(mask.any(axis=0).nonzero()[0].max(initial=0)) + 1)


def _tensors(features: ItemFeatures, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Frames, text and mask of ``rows`` on ``device``; text columns that are padding in every row are cut.

    Cutting shared padding leaves the outputs unchanged (padded keys are masked and every
    layer acts per token), and saves work: a summary is far shorter than the token budget.
    """
    mask = features.text_mask[rows]
    width = _text_width(mask)
    frames = torch.from_numpy(np.ascontiguousarray(features.frames[rows], dtype=np.float32))
    text = torch.from_numpy(np.ascontiguousarray(features.text[rows, :width], dtype=np.float32))
    return frames.to(device), text.to(device), torch.from_numpy(np.ascontiguousarray(mask[:, :width])).to(device)


@dataclass
class _Resident:
    """The training items' features as tensors on the training device for the whole run, so a step
    gathers its batch there: no per-step host gathering or copy of features. Text stays in its
    stored fp16 (on the CPU a batch is widened to float32, as ``_tensors`` gives); frames are bf16
    on a GPU (autocast casts them to it anyway), float32 on the CPU (the features' own array).
    Batch rows and the padding cut come from the host, so no step waits on the device."""

    frames: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    host_mask: np.ndarray

    @classmethod
    def of(cls, features: ItemFeatures, device: torch.device) -> _Resident:
        on_gpu = device.type == "cuda"
        mask = np.asarray(features.text_mask)
        return cls(
            torch.from_numpy(np.asarray(features.frames)).to(device, torch.bfloat16 if on_gpu else torch.float32),
            torch.from_numpy(np.asarray(features.text)).to(device, torch.float16),
            torch.from_numpy(mask).to(device),
            mask,
        )

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames, text and mask of ``rows``; text columns that are padding in every row are cut (see ``_tensors``)."""
        width = _text_width(self.host_mask[rows])
        index = torch.from_numpy(rows).to(self.frames.device, non_blocking=True)
        text = self.text[index, :width]
        return self.frames[index], text if text.is_cuda else text.float(), self.mask[index, :width]


@dataclass
class _Streamed:
    """The training items' features read a batch at a time from where they are (disk, for a features
    folder): memory bounded by the batch, whatever the number of items."""

    features: ItemFeatures
    device: torch.device

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames, text and mask of ``rows`` (``_tensors``)."""
        return _tensors(self.features, rows, self.device)


def _feature_source(features: ItemFeatures, device: torch.device, cfg: TrainConfig) -> _Resident | _Streamed:
    """Resident features when they fit ``cfg.resident_features_gib``, else streamed ones."""
    if features.nbytes <= cfg.resident_features_gib * 2**30:
        return _Resident.of(features, device)
    logger.info(f"training features of {features.nbytes / 2**30:.1f} GiB are read from disk per batch")
    return _Streamed(features, device)


def checkpoint_path(folder: str | Path, steps_done: int) -> Path:
    """The checkpoint file written after ``steps_done`` steps."""
    return Path(folder) / f"step-{steps_done:07d}.pt"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the most steps done in ``folder``, or None."""
    files = sorted(Path(folder).glob("step-[0-9]*.pt"))
    return files[-1] if files else None


def _write_checkpoint(folder: Path, steps_done: int, state: dict[str, Any]) -> Path:
    """Write atomically (temporary file, fsync, rename), then remove older checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, steps_done)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in folder.glob("step-[0-9]*.pt"):
        if old != path:
            old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``torch.load(weights_only=True)`` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_resumable(state: dict[str, Any], tower_cfg: TowerConfig, cfg: TrainConfig) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    if state["tower_config"] != tower_cfg.to_dict():
        raise ValueError("checkpoint was written for another TowerConfig")
    ours = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_MAY_CHANGE}
    theirs = {k: v for k, v in state["train_config"].items() if k not in _RESUME_MAY_CHANGE}
    if ours != theirs:
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise ValueError(f"checkpoint was written with another TrainConfig (differs in {changed})")


def _batch_loss(
    out: TowerOutput,
    products: torch.Tensor,
    temperature: float | torch.Tensor,
    objective: nn.ModuleDict,
    cfg: TrainConfig,
    has_visual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for tower outputs of [P; S; L] rows of the products ``products`` [B];
    ``has_visual`` [3B] bool: rows whose frames were not dropped (default: all), the only ones in
    the visual alignment terms.

    Under torchrun each rank holds its own products; every term is computed over the global batch
    (``distributed.gather_rows``), so the loss and, after DDP's averaging, the gradients are those
    of one process holding the whole batch.
    """
    n = len(products)
    fused = tuple(gather_rows(x) for x in out.fused.float().split(n))
    aligned = (out.visual, out.text) if cfg.alignment == "fusion" else (out.visual_branch, out.text_branch)
    visual, text = (tuple(gather_rows(part) for part in x.float().split(n)) for x in aligned)
    has_text = tuple(gather_rows(x) for x in out.has_text.split(n))
    has_visual = torch.ones_like(out.has_text) if has_visual is None else has_visual
    has_visual = tuple(gather_rows(x) for x in has_visual.split(n))
    products = gather_rows(products)
    loss, parts = cross_domain_loss(*fused, temperature)
    parts.update(alignment_losses(visual, text, has_text, temperature, has_visual))
    for key, weight in (("loss_tv", cfg.align_tv), ("loss_vv", cfg.align_vv), ("loss_tt", cfg.align_tt)):
        if weight:
            loss = loss + weight * parts[key]
    if cfg.cosface_weight > 0:
        parts["loss_cosface"] = objective["cosface"](torch.cat(fused), products.repeat(3))
        loss = loss + cfg.cosface_weight * parts["loss_cosface"]
    return loss, parts


class _Parts(nn.Module):
    """The tower's `encode_parts` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, tower: AmpereTower):
        super().__init__()
        self.tower = tower

    def forward(self, frames: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> TowerOutput:
        return self.tower.encode_parts(frames, text, text_mask)


def _validate(tower: AmpereTower, val: ItemFeatures, val_products: list, temperature: float) -> tuple[ValidationScore, float]:
    """(validation score, fused cross-domain loss on the first item of each domain of every val product).
    A late-fused tower first gets its visual weight fit on these items (``fit_visual_weight``)."""
    was_training = tower.training
    if tower.cfg.fusion == "late":  # one pass over the branches gives the weight, its score and the fused vectors
        visual, text, has_text = embed_branches(tower, val)
        weight, score = fit_visual_weight(visual, text, has_text, val)
        tower.visual_weight.fill_(weight)
        branches = (torch.from_numpy(x) for x in (visual, text, has_text))
        vectors = late_fused(*branches, tower.visual_weight.cpu()).numpy()
    else:
        vectors = embed(tower, val)
        score = ValidationScore.of(evaluate(vectors, val.product_ids, val.domains, val.splits, split="val"))
    rows = [int(items[d][0]) for d in range(3) for items in val_products]
    fused = torch.from_numpy(vectors[rows]).split(len(val_products))
    with torch.no_grad():
        loss, _ = cross_domain_loss(*fused, float(temperature))
    tower.train(was_training)
    return score, float(loss)


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
    starts afresh when there is none) and ends exactly as an uninterrupted run.

    ``cfg.finetune`` needs ``backbones`` (encoders built on ``cfg.device``, every item's media and
    text): each step then reads its items' frames and tokens, and the backbones train with the tower.
    """
    if resume and cfg.checkpoint_dir is None:
        raise ValueError("resume=True needs cfg.checkpoint_dir")
    if cfg.finetune != (backbones is not None):
        raise ValueError("backbones are given exactly when cfg.finetune is set")
    if cfg.modality_dropout and cfg.finetune:
        raise ValueError("modality_dropout acts on cached features: it cannot be combined with finetune")
    others = sorted(set(features.splits) - set(TRAINING_SPLITS))
    if others:
        raise ValueError(f"train_tower reads train and val items only; got splits {others} (pass features.only(...))")
    train = features.only(("train",))
    val = features.only(("val",))
    products, val_products = product_items(train), product_items(val)
    if len(products) < 2:
        raise ValueError(f"need at least 2 train products with page, short and live items, got {len(products)}")
    if len(val_products) < 2:
        raise ValueError(
            f"need at least 2 validation products with page, short and live items, got {len(val_products)} "
            "(mark split 'val' in the dataset or raise its val_fraction)"
        )
    batch_size = min(cfg.batch_size, len(products))
    world, me = world_size(), rank()
    if world > 1:  # under torchrun: the global batch is split evenly between the ranks
        batch_size -= batch_size % world
        if batch_size == 0:
            raise ValueError(f"a batch of {min(cfg.batch_size, len(products))} products cannot be split over {world} ranks")

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    use_amp = device.type == "cuda"
    tower = AmpereTower(tower_cfg).to(device)
    if backbones is None:
        model, inputs, factors = tower, _feature_source(train, device, cfg), cfg.lr_factors
        encode = DistributedDataParallel(_Parts(tower)) if world > 1 else tower.encode_parts
    else:
        _check_backbones(backbones, features, device)
        model = encode = EndToEnd(unfreeze(backbones), tower)
        if world > 1:  # a backbone's unused head (e.g. BERT's pooler) gets no gradient
            encode = DistributedDataParallel(model, find_unused_parameters=True)
        inputs = MediaBatches(train, backbones)
        factors = {"frame_backbone": cfg.frame_lr_factor, "text_backbone": cfg.text_lr_factor}
        factors |= {f"tower.{prefix}": factor for prefix, factor in cfg.lr_factors.items()}
    # Trainable parts of the loss (no weight decay): learnable temperature, CosFace class weights.
    objective = nn.ModuleDict()
    if cfg.learnable_temperature:
        objective["temperature"] = Temperature(cfg.temperature)
    if cfg.cosface_weight > 0:
        objective["cosface"] = CosFace(tower_cfg.out_dim, len(products), cfg.cosface_scale, cfg.cosface_margin)
    objective.to(device)
    groups = param_groups(model, cfg.lr, factors)
    if len(objective):
        groups.append(
            {"params": list(objective.parameters()), "lr": cfg.lr, "name": "objective", "lr_factor": 1.0, "weight_decay": 0.0}
        )
    trainable = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, cfg.warmup_steps, cfg.steps))

    history: list[dict] = []
    step, best_step, best, stale = 0, 0, ValidationScore(-math.inf, -math.inf), 0
    best_state: dict[str, torch.Tensor] = {}
    latest = latest_checkpoint(cfg.checkpoint_dir) if resume else None
    if latest is not None:
        state = load_checkpoint(latest)
        _check_resumable(state, tower_cfg, cfg)
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, step, stale = state["history"], state["steps_done"], state["stale"]
        best_step, best_state = state["best_step"], state["best_model"]
        best = ValidationScore(state["best_val_mR1"], state["best_val_mMRR"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def temperature_now() -> float | torch.Tensor:
        return objective["temperature"]() if cfg.learnable_temperature else cfg.temperature

    stopped = bool(history) and (cfg.patience > 0 and stale >= cfg.patience)
    sums: dict[str, torch.Tensor] = {}
    since = 0
    progress = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", disable=me > 0)
    model.train()
    while step < cfg.steps and not stopped:
        seed_this_rank(cfg.seed, step)  # under torchrun: this rank's dropout masks of this step
        chosen, rows = batch_rows(products, batch_size, cfg.seed, step)
        drops = modality_drops(cfg.modality_dropout, cfg.seed, step, len(rows))
        if world > 1:  # this rank's share of the global batch: its products' P, S and L rows
            share = slice(me * batch_size // world, (me + 1) * batch_size // world)
            chosen, rows = chosen[share], rows.reshape(3, -1)[:, share].reshape(-1)
            drops = tuple(d.reshape(3, -1)[:, share].reshape(-1) for d in drops)
        batch = inputs.batch(rows)
        if cfg.modality_dropout:  # cached features (never with finetune): frames, text, mask
            frames, text, mask = batch
            frames, mask = drop_modalities(frames, mask, *drops)
            batch = (frames, text, mask)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = encode(*batch)
        has_visual = torch.from_numpy(~drops[0]).to(device)
        loss, parts = _batch_loss(out, torch.from_numpy(chosen).to(device), temperature_now(), objective, cfg, has_visual)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        for k, v in {"loss": loss, **parts}.items():  # summed on the device: no host sync per step
            sums[k] = sums.get(k, 0.0) + v.detach()
        step, since = step + 1, since + 1
        progress.update(1)
        if step % cfg.eval_every and step < cfg.steps:
            continue
        current = temperature_now()
        temperature = float(current.detach()) if isinstance(current, torch.Tensor) else current
        val_now = val if backbones is None else features_with(val, backbones)
        score, val_loss = _validate(tower, val_now, val_products, temperature)
        if score > best:
            best_step, best, stale = step, score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        stopped = cfg.patience > 0 and stale >= cfg.patience
        row = {
            "step": step,
            **{k: float(v) / since for k, v in sums.items()},
            "temperature": temperature,
            "lr": cfg.lr * _lr_factor(step - 1, cfg.warmup_steps, cfg.steps),
            "val_mR1": score.mR1,
            "val_mMRR": score.mMRR,
            "val_loss": val_loss,
            "best_val_mR1": best.mR1,
            **({"visual_weight": float(tower.visual_weight)} if tower_cfg.fusion == "late" else {}),
        }
        history.append(row)
        progress.set_postfix(val_mR1=f"{score.mR1:.1f}", best=f"{best.mR1:.1f}@{best_step}")
        sums, since = {}, 0
        if cfg.checkpoint_dir is not None and me == 0:  # every rank holds the same weights: rank 0 writes
            _write_checkpoint(
                Path(cfg.checkpoint_dir),
                step,
                {
                    "format": CHECKPOINT_FORMAT,
                    "steps_done": step,
                    "stale": stale,
                    "best_step": best_step,
                    "best_val_mR1": best.mR1,
                    "best_val_mMRR": best.mMRR,
                    "best_model": best_state,
                    "model": model.state_dict(),
                    "objective": objective.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                    "tower_config": tower_cfg.to_dict(),
                    "train_config": cfg.to_dict(),
                },
            )
        if on_eval is not None and me == 0:
            on_eval(row)
    progress.close()
    if backbones is not None:
        inputs.close()
    model.load_state_dict(best_state or model.state_dict())
    done = None if backbones is None else freeze_trained(backbones)
    warnings = validation_warnings(history, len(val_products))
    for warning in warnings:
        logger.warning(warning)
    chosen = AmpereTower(tower_cfg).to(device)
    chosen.load_state_dict(tower.state_dict())
    return TrainResult(chosen.eval(), history, best_step, best.mR1, best.mMRR, step, stopped and step < cfg.steps, done, warnings)


def _check_backbones(backbones: EndToEndInputs, features: ItemFeatures, device: torch.device) -> None:
    """Fine-tuning's inputs cover every item and its encoders sit on the training device."""
    missing = backbones.missing(features.item_ids)
    if missing:
        raise ValueError(f"{len(missing)} items have no media or text to fine-tune on, e.g. {missing[:3]}")
    for encoder in (backbones.frame_encoder, backbones.text_encoder):
        if encoder.device != device:
            raise ValueError(f"backbone {encoder.id} is on {encoder.device}, training on {device}: build it there")


def embed(tower: AmpereTower, features: ItemFeatures, batch_size: int = 256) -> np.ndarray:
    """Fused embeddings float32 [N, out_dim] of all items, tower in eval mode."""
    tower.eval()
    device = next(tower.parameters()).device
    out = np.zeros((len(features), tower.cfg.out_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            rows = np.arange(start, min(start + batch_size, len(features)))
            out[rows] = tower(*_tensors(features, rows, device)).float().cpu().numpy()
    return out


def embed_branches(tower: AmpereTower, features: ItemFeatures, batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """(visual, text, has_text) of all items, tower in eval mode: the branch embeddings [N, D] that a
    late-fused tower concatenates, and bool [N] for items that have text."""
    tower.eval()
    device = next(tower.parameters()).device
    visual, text, has_text = [], [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            rows = np.arange(start, min(start + batch_size, len(features)))
            out = tower.encode_parts(*_tensors(features, rows, device))
            visual.append(out.visual.float().cpu().numpy())
            text.append(out.text.float().cpu().numpy())
            has_text.append(out.has_text.cpu().numpy())
    return np.concatenate(visual), np.concatenate(text), np.concatenate(has_text)
