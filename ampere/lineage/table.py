"""A table with its lineage as one value: what a downstream stage needs to know about the data it
reads (data version, DVC file and revision, dataset, split fractions, summary lineage, text source)
travels with the rows, as data, not in ``DataFrame.attrs`` (experimental in pandas, dropped by many
operations)."""

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
