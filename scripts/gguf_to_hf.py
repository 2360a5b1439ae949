"""Convert a GGUF causal LM (default: the packaged SmolLM2-135M-Instruct) into a Hugging Face directory.

vLLM and the transformers backend load a plain HF directory (config, safetensors, tokenizer with
its chat template); the packaged model only ships as GGUF. Weights are dequantised to ``--dtype``,
so the HF model computes with the same values llama.cpp does.

  python scripts/gguf_to_hf.py --out /models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from ampere.asr.backends.llamacpp import packaged_gguf_path


def convert(gguf: Path, out: Path, dtype: torch.dtype) -> None:
    """Write ``out`` as an HF model directory equivalent to ``gguf``."""
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise SystemExit(f"{gguf}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: packaged SmolLM2)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    args = parser.parse_args(argv)
    convert(args.gguf or Path(packaged_gguf_path()), args.out, getattr(torch, args.dtype))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
