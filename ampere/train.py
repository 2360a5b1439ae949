"""Training of the shared tower with cross-domain InfoNCE over batches of distinct products."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ampere.features import ItemFeatures
from ampere.losses import cross_domain_loss
from ampere.models.tower import AmpereTower, TowerConfig

TRAIN_DOMAINS = ("page", "short", "live")


@dataclass
class TrainConfig:
    """Optimisation settings. steps_per_epoch None: train products // batch_size (at least 1)."""

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


def _tensors(features: ItemFeatures, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    frames = torch.from_numpy(np.ascontiguousarray(features.frames[rows], dtype=np.float32))
    text = torch.from_numpy(np.ascontiguousarray(features.text[rows], dtype=np.float32))
    mask = torch.from_numpy(features.text_mask[rows])
    return frames.to(device), text.to(device), mask.to(device)


def train_tower(
    features: ItemFeatures,
    tower_cfg: TowerConfig,
    cfg: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[AmpereTower, list[dict]]:
    """Train a fresh tower on the split == "train" items; returns (tower in eval mode, history).

    Each step takes a batch of distinct products, each with one random page, short and live
    item (products lacking a domain are skipped). History: one row per epoch with the mean
    losses and the last learning rate.
    """
    train = features.subset([i for i, s in enumerate(features.splits) if s == "train"])
    products = product_items(train)
    if len(products) < 2:
        raise ValueError(f"need at least 2 train products with page, short and live items, got {len(products)}")
    batch_size = min(cfg.batch_size, len(products))
    steps = cfg.steps_per_epoch or max(1, len(products) // batch_size)
    total_steps = cfg.epochs * steps

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    use_amp = device.type == "cuda"
    tower = AmpereTower(tower_cfg).to(device)
    optimizer = torch.optim.AdamW(tower.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, cfg.warmup_epochs * steps, total_steps)
    )
    batches = _product_batches(rng, len(products), batch_size)
    history: list[dict] = []
    for epoch in tqdm(range(cfg.epochs), desc="epochs", unit="epoch"):
        tower.train()
        sums = {"loss": 0.0, "loss_ps": 0.0, "loss_pl": 0.0, "loss_sl": 0.0}
        for _ in tqdm(range(steps), desc=f"epoch {epoch}", unit="step", leave=False):
            chosen = next(batches)
            rows = np.array([[rng.choice(products[p][d]) for p in chosen] for d in range(3)]).reshape(-1)
            frames, text, mask = _tensors(train, rows, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                emb = tower(frames, text, mask)
            p, s, l = emb.float().split(len(chosen))  # noqa: E741
            loss, parts = cross_domain_loss(p, s, l, cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tower.parameters(), cfg.grad_clip)
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v.item()
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, "lr": lr}
        history.append(row)
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
