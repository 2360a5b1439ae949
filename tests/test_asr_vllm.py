"""vLLM backend: pure helpers without vLLM; a real generation only on a CUDA host with vLLM."""

import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest

from ampere.asr.backends import VllmConfig, VllmSummarizer, build_summarizer
from ampere.asr.backends.vllm import vllm_conversations, vllm_generation, vllm_sampling_params, vllm_structured_kwargs
from ampere.asr.prompts import SUMMARY_SCHEMA, load_prompt
from ampere.asr.summarizer import GenerationConfig, summarize_with_retries


def fake_sampling_module(structured: bool = True, guided: bool = False) -> SimpleNamespace:
    module = SimpleNamespace(SamplingParams=lambda **kw: kw)
    if structured:
        module.StructuredOutputsParams = lambda json: ("structured", json)
    if guided:
        module.GuidedDecodingParams = lambda json: ("guided", json)
    return module


def fake_output(text: str, finish_reason: str = "stop", prompt_len: int = 700, out_len: int = 20):
    completion = SimpleNamespace(text=text, token_ids=list(range(out_len)), finish_reason=finish_reason)
    return SimpleNamespace(outputs=[completion], prompt_token_ids=list(range(prompt_len)))


def test_structured_output_params_prefer_the_new_api():
    kw = vllm_structured_kwargs(fake_sampling_module(structured=True, guided=True), SUMMARY_SCHEMA)
    assert kw == {"structured_outputs": ("structured", SUMMARY_SCHEMA)}
    kw = vllm_structured_kwargs(fake_sampling_module(structured=False, guided=True), SUMMARY_SCHEMA)
    assert kw == {"guided_decoding": ("guided", SUMMARY_SCHEMA)}
    with pytest.raises(RuntimeError):
        vllm_structured_kwargs(fake_sampling_module(structured=False), SUMMARY_SCHEMA)


def test_sampling_params_are_deterministic_per_attempt():
    config = VllmConfig(model="qwen", max_tokens=48, seed=7)
    module = fake_sampling_module()
    first = vllm_sampling_params(module, config, 0, SUMMARY_SCHEMA)
    retry = vllm_sampling_params(module, config, 2, SUMMARY_SCHEMA)
    assert first == {
        "max_tokens": 48,
        "temperature": 0.0,
        "seed": 7,
        "structured_outputs": ("structured", SUMMARY_SCHEMA),
    }
    assert (retry["temperature"], retry["seed"]) == (config.retry_temperature, 9)


def test_conversations_share_the_few_shot_prefix():
    prompt = load_prompt()
    convs = vllm_conversations(prompt, ["kettle one", "lamp two"])
    assert convs[0][:-1] == convs[1][:-1]
    assert "lamp two" in convs[1][-1]["content"] and convs[1][-1]["role"] == "user"


def test_request_outputs_become_generations():
    gen = vllm_generation(fake_output('{"product_name":"kettle","features":[]}', "length", 9, 3))
    assert (gen.tokens_in, gen.tokens_out, gen.truncated, gen.error) == (9, 3, True, None)
    assert vllm_generation(SimpleNamespace(outputs=[], prompt_token_ids=[1])).error


def test_retry_rounds_on_vllm_like_outputs():
    """Attempt 0 answers one record badly; only that record is retried, with a new seed."""
    config = VllmConfig(model="qwen", max_retries=2)
    answers = {
        ("kettle", 0): '{"product_name":"electric kettle","features":["1.5 L","kettle steel"]}',
        ("lamp", 0): '{"product_name":"desk lamp","features":[',
        ("lamp", 1): '{"product_name":"desk lamp","features":["lamp touch control"]}',
    }
    rounds = []

    def generate(transcripts, attempt):
        params = vllm_sampling_params(fake_sampling_module(), config, attempt, SUMMARY_SCHEMA)
        rounds.append((list(transcripts), params["seed"]))
        return [vllm_generation(fake_output(answers[t.split()[-1], attempt])) for t in transcripts]

    results = summarize_with_retries(["this is the steel kettle", "", "touch control lamp"], generate, 1200, config.max_retries)
    assert rounds == [
        (["this is the steel kettle", "touch control lamp"], 0),
        (["touch control lamp"], 1),
    ]
    kettle, empty, lamp = results
    # "1.5 L" shares no word with the transcript: dropped as ungrounded
    assert kettle.text == "Product name: electric kettle; Features: kettle steel"
    assert (kettle.attempts, kettle.tokens_in) == (1, 700)
    assert empty.status == "empty"
    assert (lamp.status, lamp.attempts, lamp.tokens_in, lamp.tokens_out) == ("ok", 2, 1400, 40)


def test_group_of_one_retries_each_transcript_before_the_next():
    """Sequential engines (group_size=1) retry a transcript at once, while its prompt is cached."""
    answers = {
        ("kettle", 0): "not json",
        ("kettle", 1): '{"product_name":"steel kettle","features":[]}',
        ("lamp", 0): '{"product_name":"touch lamp","features":["touch control"]}',
    }
    calls = []

    def generate(transcripts, attempt):
        calls.append((list(transcripts), attempt))
        return [vllm_generation(fake_output(answers[t.split()[-1], attempt])) for t in transcripts]

    results = summarize_with_retries(["the steel kettle", "", "touch control lamp"], generate, 1200, 2, group_size=1)
    assert calls == [(["the steel kettle"], 0), (["the steel kettle"], 1), (["touch control lamp"], 0)]
    assert [(r.status, r.attempts) for r in results] == [("ok", 2), ("empty", 0), ("ok", 1)]
    assert results[0].text == "Product name: steel kettle; Features:"


def test_a_name_copied_from_the_examples_is_retried_then_failed():
    """A product name sharing no word with the transcript is an invalid answer, not a summary."""
    transcript = "ok guys the pink wireless earbuds are back"
    answers = [
        '{"product_name":"stainless steel kettle","features":["1.7 L"]}',
        '{"product_name":"pink wireless earbuds","features":["kettle 1.7 L","pink"]}',
    ]
    results = summarize_with_retries(
        [transcript], lambda ts, attempt: [vllm_generation(fake_output(answers[attempt]))], 1200, 1
    )
    assert (results[0].status, results[0].attempts) == ("ok", 2)
    assert results[0].text == "Product name: pink wireless earbuds; Features: pink"
    copied = summarize_with_retries([transcript], lambda ts, attempt: [vllm_generation(fake_output(answers[0]))], 1200, 1)
    assert (copied[0].status, copied[0].text) == ("failed", "")
    assert "'stainless steel kettle' shares no word with the transcript" in copied[0].error


def test_exhausted_retries_report_the_last_reason():
    results = summarize_with_retries(
        ["a transcript"],
        lambda ts, attempt: [vllm_generation(fake_output("not json")) for _ in ts],
        1200,
        1,
    )
    assert (results[0].status, results[0].text, results[0].attempts) == ("failed", "", 2)
    assert "invalid JSON" in results[0].error and not results[0].retryable  # reproducible: cached as failed
    no_answer = summarize_with_retries(
        ["a transcript"], lambda ts, attempt: [vllm_generation(SimpleNamespace(outputs=[], prompt_token_ids=[1]))], 1200, 1
    )
    assert no_answer[0].status == "failed" and no_answer[0].retryable  # engine error: tried again next run


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": ""},
        {"model": "  "},
        {"model": "qwen", "tensor_parallel_size": 0},
        {"model": "qwen", "gpu_memory_utilization": 0.0},
        {"model": "qwen", "max_tokens": 0},
        {"model": "qwen", "max_retries": -1},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        VllmConfig(**kwargs)


def test_construction_is_lazy_and_identifies_the_model(tmp_path):
    before = "vllm" in sys.modules
    by_name = build_summarizer("vllm", model="Qwen/Qwen2.5-1.5B-Instruct", tensor_parallel_size=2)
    assert isinstance(by_name, VllmSummarizer)
    assert ("vllm" in sys.modules) == before
    assert by_name.model_id == "Qwen/Qwen2.5-1.5B-Instruct"
    assert by_name.decoding["backend"] == "vllm"
    (tmp_path / "config.json").write_text("{}")
    local = VllmSummarizer(VllmConfig(model=str(tmp_path)))
    name, digest = local.model_id.split("@")
    assert name == tmp_path.name and len(digest) == 12
    pinned = VllmSummarizer(VllmConfig(model=str(tmp_path), model_id="mine@v3"))
    assert pinned.model_id == "mine@v3"
    with pytest.raises(ValueError, match="unknown summarizer backend"):
        build_summarizer("openai")


def test_decoding_covers_every_generation_setting_but_the_batch_size():
    prompt = load_prompt("summary-v2")
    decoding = VllmConfig(model="qwen").decoding("vllm", "json_schema", prompt)
    for name in GenerationConfig.__dataclass_fields__:
        assert (name in decoding) == (name != "batch_size")
    assert VllmConfig(model="qwen", batch_size=7).decoding("vllm", "json_schema", prompt) == decoding
    grounded = VllmConfig(model="qwen").decoding("vllm", "json_schema", load_prompt("summary-v3"))
    assert grounded["constraint"] == "grounded-json_schema"


def test_vllm_gets_large_batches_by_default():
    assert VllmSummarizer(VllmConfig(model="qwen")).batch_size == 1024
    assert build_summarizer("vllm", model="qwen", batch_size=64).batch_size == 64
    with pytest.raises(ValueError, match="batch_size"):
        VllmConfig(model="qwen", batch_size=0)


def _cuda_and_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_and_vllm(), reason="needs a CUDA GPU and vLLM")
def test_real_vllm_generation(monkeypatch):
    """Seen passing on an H100 with vLLM 0.26.0 and SmolLM2 converted by scripts/gguf_to_hf.py."""
    # In-process engine: a forked engine process cannot use CUDA once pytest's process has touched it.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    model = os.environ.get("AMPERE_VLLM_TEST_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    config = VllmConfig(model=model, max_model_len=2048, gpu_memory_utilization=0.3)
    summarizer = VllmSummarizer(config)
    results = summarizer.summarize(["ok guys this is the pink wireless earbuds noise cancelling forty hours battery", ""])
    assert results[1].status == "empty"
    assert results[0].status == "ok", results[0].error
    assert results[0].text.startswith("Product name: ")
