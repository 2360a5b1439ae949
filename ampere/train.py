"""Training of the shared tower with cross-domain InfoNCE over batches of distinct products.

Objective per batch (P, S, L items of the same products, in-batch negatives): InfoNCE between
the fused embeddings of P-S, P-L and S-L, plus weighted alignment terms (``ampere.alignment``)
and, optionally, a CosFace product-id classifier (``ampere.cosface``). Training can checkpoint
every few epochs and resume from the latest checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ampere.alignment import alignment_losses
from ampere.cosface import CosFace
from ampere.features import ItemFeatures
from ampere.losses import Temperature, cross_domain_loss
from ampere.models.tower import AmpereTower, TowerConfig, TowerOutput

TRAIN_DOMAINS = ("page", "short", "live")
CHECKPOINT_FORMAT = 1
# TrainConfig fields that may differ between a checkpointed run and its resumption.
_RESUME_MAY_CHANGE = ("device", "checkpoint_dir", "checkpoint_every")


@dataclass
class TrainConfig:
    """Optimisation settings. steps_per_epoch None: train products // batch_size (at least 1).

    Loss = fused InfoNCE (P-S + P-L + S-L) + align_tv * text<->visual + align_vv *
    visual<->visual + align_tt * text<->text + cosface_weight * CosFace (0 disables the
    classifier). lr_factors: learning-rate factor per tower parameter-name prefix (see
    ``param_groups``). checkpoint_dir: where to write a checkpoint every ``checkpoint_every``
    epochs and after the last one (only the latest is kept).
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    temperature: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    steps_per_epoch: int | None = None
    align_tv: float = 0.1
    align_vv: float = 0.1
    align_tt: float = 0.1
    learnable_temperature: bool = False
    cosface_weight: float = 0.0
    cosface_scale: float = 64.0
    cosface_margin: float = 0.4
    lr_factors: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def product_items(features: ItemFeatures) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per product (sorted by id) with page, short and live items: their row indices per domain."""
    rows: dict[str, dict[str, list[int]]] = {}
    for i, (pid, domain) in enumerate(zip(features.product_ids, features.domains, strict=True)):
        rows.setdefault(pid, {d: [] for d in TRAIN_DOMAINS})[domain].append(i)
    return [
        tuple(np.array(rows[pid][d]) for d in TRAIN_DOMAINS)
        for pid in sorted(rows)
        if all(rows[pid][d] for d in TRAIN_DOMAINS)
    ]


def _product_batches(rng: np.random.Generator, n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Endless batches of distinct product indices, walking through fresh permutations."""
    order = rng.permutation(n)
    while True:
        if len(order) < batch_size:
            order = rng.permutation(n)
        yield order[:batch_size]
        order = order[batch_size:]


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


def _tensors(features: ItemFeatures, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    frames = torch.from_numpy(np.ascontiguousarray(features.frames[rows], dtype=np.float32))
    text = torch.from_numpy(np.ascontiguousarray(features.text[rows], dtype=np.float32))
    mask = torch.from_numpy(features.text_mask[rows])
    return frames.to(device), text.to(device), mask.to(device)


def checkpoint_path(folder: str | Path, epochs_done: int) -> Path:
    """The checkpoint file written after ``epochs_done`` epochs."""
    return Path(folder) / f"epoch-{epochs_done:04d}.pt"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the most epochs done in ``folder``, or None."""
    files = sorted(Path(folder).glob("epoch-[0-9][0-9][0-9][0-9].pt"))
    return files[-1] if files else None


def _write_checkpoint(folder: Path, epochs_done: int, state: dict[str, Any]) -> Path:
    """Write atomically (temporary file, fsync, rename), then remove older checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, epochs_done)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in folder.glob("epoch-[0-9][0-9][0-9][0-9].pt"):
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for tower outputs of [P; S; L] rows of the products ``products`` [B]."""
    fused, visual, text = (x.float().split(len(products)) for x in out[:3])
    loss, parts = cross_domain_loss(*fused, temperature)
    parts.update(alignment_losses(visual, text, out.has_text.split(len(products)), temperature))
    for key, weight in (("loss_tv", cfg.align_tv), ("loss_vv", cfg.align_vv), ("loss_tt", cfg.align_tt)):
        if weight:
            loss = loss + weight * parts[key]
    if cfg.cosface_weight > 0:
        parts["loss_cosface"] = objective["cosface"](torch.cat(fused), products.repeat(3))
        loss = loss + cfg.cosface_weight * parts["loss_cosface"]
    return loss, parts


def train_tower(
    features: ItemFeatures,
    tower_cfg: TowerConfig,
    cfg: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    resume: bool = False,
) -> tuple[AmpereTower, list[dict]]:
    """Train a fresh tower on the split == "train" items; returns (tower in eval mode, history).

    Each step takes a batch of distinct products, each with one random page, short and live
    item (products lacking a domain are skipped); the sampling of epoch e is drawn from
    ``default_rng([seed, e])``, so no sampler state crosses epochs. History: one row per epoch
    with the mean total loss and loss parts, the temperature and the last base learning rate.

    With ``cfg.checkpoint_dir``, the model, optimizer, scheduler, history and torch RNG state are
    checkpointed; ``resume=True`` continues from the latest checkpoint there (or starts afresh
    when there is none) and ends with the same weights and history as an uninterrupted run.
    ``on_epoch`` runs after each epoch's checkpoint, only for the epochs trained by this call.
    """
    if resume and cfg.checkpoint_dir is None:
        raise ValueError("resume=True needs cfg.checkpoint_dir")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    train = features.subset([i for i, s in enumerate(features.splits) if s == "train"])
    products = product_items(train)
    if len(products) < 2:
        raise ValueError(f"need at least 2 train products with page, short and live items, got {len(products)}")
    batch_size = min(cfg.batch_size, len(products))
    steps = cfg.steps_per_epoch or max(1, len(products) // batch_size)
    total_steps = cfg.epochs * steps
    warmup_steps = cfg.warmup_epochs * steps

    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    use_amp = device.type == "cuda"
    tower = AmpereTower(tower_cfg).to(device)
    # Trainable parts of the loss (no weight decay): learnable temperature, CosFace class weights.
    objective = nn.ModuleDict()
    if cfg.learnable_temperature:
        objective["temperature"] = Temperature(cfg.temperature)
    if cfg.cosface_weight > 0:
        objective["cosface"] = CosFace(tower_cfg.out_dim, len(products), cfg.cosface_scale, cfg.cosface_margin)
    objective.to(device)
    groups = param_groups(tower, cfg.lr, cfg.lr_factors)
    if len(objective):
        groups.append(
            {"params": list(objective.parameters()), "lr": cfg.lr, "name": "objective", "lr_factor": 1.0, "weight_decay": 0.0}
        )
    trainable = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup_steps, total_steps))

    history: list[dict] = []
    start_epoch = 0
    latest = latest_checkpoint(cfg.checkpoint_dir) if resume else None
    if latest is not None:
        state = load_checkpoint(latest)
        _check_resumable(state, tower_cfg, cfg)
        tower.load_state_dict(state["tower"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epochs_done"]
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    for epoch in tqdm(range(start_epoch, cfg.epochs), desc="epochs", unit="epoch", initial=start_epoch, total=cfg.epochs):
        tower.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        batches = _product_batches(rng, len(products), batch_size)
        sums: dict[str, float] = {}
        for _ in tqdm(range(steps), desc=f"epoch {epoch}", unit="step", leave=False):
            chosen = next(batches)
            rows = np.array([[rng.choice(products[p][d]) for p in chosen] for d in range(3)]).reshape(-1)
            frames, text, mask = _tensors(train, rows, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = tower.encode_parts(frames, text, mask)
            temperature = objective["temperature"]() if cfg.learnable_temperature else cfg.temperature
            loss, parts = _batch_loss(out, torch.from_numpy(chosen).to(device), temperature, objective, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        lr = cfg.lr * _lr_factor((epoch + 1) * steps - 1, warmup_steps, total_steps)  # at the last step
        last_temperature = float(temperature.detach()) if cfg.learnable_temperature else cfg.temperature
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, "temperature": last_temperature, "lr": lr}
        history.append(row)
        done = epoch + 1
        if cfg.checkpoint_dir is not None and (done % cfg.checkpoint_every == 0 or done == cfg.epochs):
            state = {
                "format": CHECKPOINT_FORMAT,
                "epochs_done": done,
                "tower": tower.state_dict(),
                "objective": objective.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                "tower_config": tower_cfg.to_dict(),
                "train_config": cfg.to_dict(),
            }
            _write_checkpoint(Path(cfg.checkpoint_dir), done, state)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return tower.eval(), history


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
