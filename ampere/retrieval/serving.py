"""The MLflow pyfunc form of a trained tower: precomputed backbone features in, embeddings out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from ampere.models.encoder_io import load_tower


class EncoderModel(mlflow.pyfunc.PythonModel):
    """Input: a dict with `frames` [N,8,Dv], `text` [N,T,Dt], `text_mask` [N,T]; output: [N, out_dim] float32."""

    def load_context(self, context: Any) -> None:
        self.tower = load_tower(Path(context.artifacts["encoder"]))

    # `model_input` carries no type hint: MLflow reads predict's hints as an input schema and
    # supports only list[...] ones there.
    def predict(self, context: Any, model_input, params: dict | None = None) -> np.ndarray:
        """`model_input`: dict of arrays `frames`, `text`, `text_mask`; returns float32 [N, out_dim]."""
        with torch.inference_mode():
            out = self.tower(
                torch.as_tensor(np.asarray(model_input["frames"], dtype=np.float32)),
                torch.as_tensor(np.asarray(model_input["text"], dtype=np.float32)),
                torch.as_tensor(np.asarray(model_input["text_mask"], dtype=bool)),
            )
        return out.numpy().astype(np.float32)
