"""The transformers backend: any local Hugging Face causal LM folder with a chat template, greedy
generation without constrained decoding (invalid answers are retried)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ampere.asr.prompts import Prompt, load_prompt
from ampere.asr.summarizer import Generation, GenerationConfig, RetryingSummarizer, versioned_model_id


@dataclass(kw_only=True)
class TransformersConfig(GenerationConfig):
    """Local Hugging Face causal LM directory (must have a chat template)."""

    model_path: str
    model_id: str | None = field(
        default=None, metadata={"doc": "the model's cache identity (default: a local path's content hash, a name as given)"}
    )
    device: str = field(
        default="auto",
        metadata={"doc": "where the transformers backend runs (auto: the device setting, else CUDA when present, else CPU)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_path.strip():
            raise ValueError("model_path must be a non-empty local directory")


class TransformersSummarizer(RetryingSummarizer):
    """Greedy generation with the model's chat template, then strict JSON parsing."""

    group_size = 1

    def __init__(self, config: TransformersConfig, prompt: Prompt | None = None):
        if not Path(config.model_path).is_dir():
            raise FileNotFoundError(f"model directory not found: {config.model_path}")
        self.config = config
        self.prompt = prompt or load_prompt()
        self.model_id = config.model_id or versioned_model_id(config.model_path)
        self.decoding = config.decoding("transformers", "none", self.prompt)
        self.batch_size = config.batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        from ampere.device import resolve_device

        self._device = resolve_device(config.device)  # a device this host lacks is an error here, not at the first call

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.config.model_path
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self._model.to(self._device).eval()

    def _generate(self, transcripts: list[str], attempt: int) -> list[Generation]:
        import torch

        if self._model is None:
            self._load()
        tokenizer, model = self._tokenizer, self._model
        temperature, seed = self.config.attempt_params(attempt)
        sampling: dict = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        generations = []
        for transcript in transcripts:
            text = tokenizer.apply_chat_template(
                self.prompt.messages(transcript), tokenize=False, add_generation_prompt=True
            )
            encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            input_ids = encoded["input_ids"].to(self._device)
            torch.manual_seed(seed)
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=encoded["attention_mask"].to(self._device),
                    max_new_tokens=self.config.max_tokens,
                    pad_token_id=pad_id,
                    **sampling,
                )
            new_tokens = output[0, input_ids.shape[1] :]
            generations.append(
                Generation(
                    raw=tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                    tokens_in=int(input_ids.shape[1]),
                    tokens_out=int(new_tokens.shape[0]),
                    truncated=int(new_tokens.shape[0]) >= self.config.max_tokens,
                )
            )
        return generations
