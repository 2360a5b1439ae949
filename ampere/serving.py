"""The MLflow pyfunc form of a trained tower: precomputed backbone features in, embeddings out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from ampere.encoder_io import load_tower


class EncoderModel(mlflow.pyfunc.PythonModel):
    """Input: a dict with `frames` [N,8,Dv], `text` [N,T,Dt], `text_mask` [N,T]; output: [N,128] float32."""

    def load_context(self, context: Any) -> None:
        self.tower = load_tower(Path(context.artifacts["encoder"]))

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> np.ndarray:
        """`model_input`: dict of arrays `frames`, `text`, `text_mask`; returns float32 [N,128]."""
        with torch.inference_mode():
            out = self.tower(
                torch.as_tensor(np.asarray(model_input["frames"], dtype=np.float32)),
                torch.as_tensor(np.asarray(model_input["text"], dtype=np.float32)),
                torch.as_tensor(np.asarray(model_input["text_mask"], dtype=bool)),
            )
        return out.numpy().astype(np.float32)
