"""Values that carry the lineage of their data, so that a downstream stage reads what it needs to know
(data version, DVC file and revision, dataset, split fractions, summary lineage, text source, the
backbones' ids) from its input itself, as data: not from ``DataFrame.attrs`` (experimental in pandas,
dropped by many operations) nor from a file beside the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class LineagedTable:
    """Rows and the lineage of their data (JSON values by name)."""

    frame: pd.DataFrame
    lineage: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class LineagedFeatures:
    """A features folder (a workspace place: a path or an object-store URL) and the lineage of its data:
    the backbones that computed it and the lineage of the training set it encodes."""

    path: str
    lineage: dict[str, Any] = field(default_factory=dict)
