"""The Dagster code location loads, and its job covers the whole asset graph."""

from __future__ import annotations

import dataclasses

import pytest
from dagster import AssetKey, DagsterInvalidConfigError, Definitions, validate_run_config

from ampere.asr.backends import LlamaCppConfig, backend_settings
from ampere.asr.candidates import TaggerConfig
from ampere.asr.summarizer import GenerationConfig
from ampere.training.train import TrainConfig
from orchestration.ablation import ABLATION_JOB, AblationStudyConfig
from orchestration.assets.training import EncoderConfig
from orchestration.config import to_dataclass
from orchestration.definitions import defs
from orchestration.jobs import PIPELINE_JOB, REFRESH_JOB
from orchestration.resources import SummarizerResource

EXPECTED = {
    "raw_items",
    "asr_summaries",
    "training_set",
    "backbone_features",
    "trained_encoder",
    "embeddings",
    "faiss_index",
    "retrieval_evaluation",
    "champion_promotion",
    "quarantined_items",
}


def test_definitions_load_and_validate() -> None:
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(PIPELINE_JOB)
    keys = {key.to_user_string() for key in job.asset_layer.asset_graph.get_all_asset_keys()}
    assert keys == EXPECTED
    graph = defs.resolve_asset_graph()
    # Training reads the features, and with `finetune` the training set's media and texts.
    assert graph.get(AssetKey("trained_encoder")).parent_keys == {AssetKey("backbone_features"), AssetKey("training_set")}
    assert defs.resolve_schedule_def("weekly_retrain").job_name == PIPELINE_JOB
    # A new data version refreshes the catalogue without training: raw items (with their checks) and the index.
    assert defs.resolve_sensor_def("dvc_data_sensor").job_name == REFRESH_JOB
    refresh = defs.resolve_job_def(REFRESH_JOB)
    assert {key.to_user_string() for key in refresh.asset_layer.executable_asset_keys} == {"raw_items", "catalogue_index"}
    assert graph.get(AssetKey("catalogue_index")).parent_keys == {AssetKey("raw_items")}


def _non_default(f: dataclasses.Field) -> object:
    """A valid value of a TrainConfig field that differs from its default."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    special = {
        "device": "cpu",
        "alignment": "fusion",
        "fusion": "tokens",
        "checkpoint_dir": "/tmp/ckpt",
        "lr_factors": {"head": 0.5},
    }
    if f.name in special:
        return special[f.name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default * 2 + 0.125
    raise AssertionError(f"no test value for TrainConfig.{f.name} ({type(default).__name__}): extend _non_default")


@pytest.mark.parametrize(
    ("job_name", "node", "config_class"),
    [(PIPELINE_JOB, "trained_encoder", EncoderConfig), (ABLATION_JOB, "ablation_study", AblationStudyConfig)],
)
def test_every_train_config_field_is_reachable_from_dagster_run_config(job_name: str, node: str, config_class: type) -> None:
    """Each TrainConfig field, set in the run config of the job, arrives in the TrainConfig the asset trains with."""
    values = {f.name: _non_default(f) for f in dataclasses.fields(TrainConfig)}
    assert all(values[name] != getattr(TrainConfig(), name) for name in values)
    processed = validate_run_config(defs.resolve_job_def(job_name), {"ops": {node: {"config": values}}})
    given = processed["ops"][node]["config"]
    assert to_dataclass(TrainConfig, config_class(**given)) == TrainConfig(**values)
    with pytest.raises(DagsterInvalidConfigError, match="no_such_field"):
        validate_run_config(defs.resolve_job_def(job_name), {"ops": {node: {"config": {"no_such_field": 1}}}})


def test_every_tagger_config_field_is_reachable_from_the_summarizer_resource_config() -> None:
    """Each TaggerConfig field, set as resource config of the job, arrives in the TaggerConfig the summaries use."""
    values = {"top_words": 5, "max_phrases": 3, "max_df": 0.5, "smoothing": 2.0, "repair": False}
    assert set(values) == {f.name for f in dataclasses.fields(TaggerConfig)}
    assert all(values[name] != getattr(TaggerConfig(), name) for name in values)
    processed = validate_run_config(
        defs.resolve_job_def(PIPELINE_JOB), {"resources": {"summarizer": {"config": values}}}
    )
    given = processed["resources"]["summarizer"]["config"]
    assert SummarizerResource(**given).tagger_config() == TaggerConfig(**values)


def test_every_decoding_setting_is_reachable_from_the_summarizer_resource_config() -> None:
    """Each GenerationConfig field, set as resource config of the job, arrives in the engine's decoding (the cache key)."""
    values = {"max_tokens": 48, "temperature": 0.2, "seed": 3, "max_retries": 1, "retry_temperature": 0.9,
              "max_transcript_chars": 600, "batch_size": 4}  # fmt: skip
    assert set(values) == {f.name for f in dataclasses.fields(GenerationConfig)}
    processed = validate_run_config(
        defs.resolve_job_def(PIPELINE_JOB), {"resources": {"summarizer": {"config": values}}}
    )
    summarizer = SummarizerResource(**processed["resources"]["summarizer"]["config"]).summarizer()
    assert summarizer.config == LlamaCppConfig(**values, n_threads=summarizer.config.n_threads)
    decoding = {k: v for k, v in values.items() if k != "batch_size"}  # batch_size shapes no answer
    assert {k: summarizer.decoding[k] for k in decoding} == decoding


def test_every_backend_setting_is_reachable_from_the_summarizer_resource_config() -> None:
    """Each backend's own settings (beyond decoding and the model), set as resource config, reach the backend's config."""
    values = {"n_ctx": 1024, "n_threads": 1, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5,
              "max_model_len": 2048, "dtype": "bfloat16", "model_id": "qwen@test", "device": "cpu"}  # fmt: skip
    assert set(values) == {f.name for f, _ in backend_settings()}
    processed = validate_run_config(
        defs.resolve_job_def(PIPELINE_JOB), {"resources": {"summarizer": {"config": {**values, "backend": "vllm"}}}}
    )
    resource = SummarizerResource(**processed["resources"]["summarizer"]["config"])
    vllm = {name: resource.engine_options()[name] for name in ("tensor_parallel_size", "gpu_memory_utilization",
            "max_model_len", "dtype", "model_id")}  # fmt: skip
    assert vllm == {name: values[name] for name in vllm}
    assert "n_ctx" not in resource.engine_options()  # a setting the chosen backend lacks is not passed
    llamacpp = SummarizerResource(**{**processed["resources"]["summarizer"]["config"], "backend": "llamacpp"}).summarizer()
    assert (llamacpp.config.n_ctx, llamacpp.config.n_threads) == (1024, 1)
