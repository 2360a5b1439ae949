"""One settings object: flags, then environment, then defaults; the only reader of its variables."""

import json
import re
from pathlib import Path

import pytest

from ampere.device import resolve_device
from ampere.settings import PROJECT_FOLDER, Settings


def test_a_flag_beats_the_environment_which_beats_the_default(tmp_path):
    home = tmp_path / "home"
    defaults = Settings.resolve(environ={}, home=home)
    assert defaults.workspace == str(home / "workspace") and defaults.dataset == home / "data"
    assert defaults.summary_cache == str(home / "workspace" / "summary_cache.sqlite")
    assert defaults.tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}" and defaults.gpu_slots == 0
    environ = {"AMPERE_HOME": str(home), "AMPERE_WORKSPACE": "s3://bucket/ws", "AMPERE_GPU_SLOTS": "8",
               "MLFLOW_TRACKING_URI": "http://mlflow:5000"}  # fmt: skip
    from_env = Settings.resolve(environ=environ)
    assert from_env.home == home.resolve() and from_env.workspace == "s3://bucket/ws" and from_env.gpu_slots == 8
    assert from_env.summary_cache == "s3://bucket/ws/summary_cache.sqlite"  # follows the workspace (refused later)
    assert from_env.tracking_uri == "http://mlflow:5000"
    flagged = Settings.resolve(environ=environ, workspace=str(tmp_path / "ws"), tracking_uri="http://other:5000")
    assert flagged.workspace == str(tmp_path / "ws") and flagged.tracking_uri == "http://other:5000"
    assert flagged.summary_cache == str(tmp_path / "ws" / "summary_cache.sqlite")
    assert Settings.resolve(environ={}).home == PROJECT_FOLDER
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings.resolve(no_such_setting=1)


def test_job_settings_are_json_and_rebuild_the_same_settings(tmp_path):
    settings = Settings.resolve(environ={}, home=tmp_path, summarizer_workers=2)
    recorded = json.loads(json.dumps(settings.job_settings()))
    assert Settings.resolve(environ={}, home=tmp_path, **recorded) == settings


def test_auto_devices_follow_the_device_setting(monkeypatch):
    monkeypatch.setenv("AMPERE_DEVICE", "cpu")
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setenv("AMPERE_DEVICE", "cuda:7")
    with pytest.raises(ValueError, match="cuda:7"):
        resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"  # a stage that names a device overrides the setting


def test_no_other_module_reads_a_settings_variable():
    variables = [variable for variable, _, _ in Settings.environment()]
    assert "AMPERE_HOME" in variables and "MLFLOW_TRACKING_URI" in variables
    pattern = re.compile("|".join(rf"os\.environ[^\n]*\b{v}\b|getenv\([^\n]*\b{v}\b" for v in variables))
    readers = []
    for folder in ("ampere", "orchestration", "benchmarks"):
        for path in sorted((PROJECT_FOLDER / folder).rglob("*.py")):
            if path != PROJECT_FOLDER / "ampere" / "settings.py" and pattern.search(path.read_text()):
                readers.append(str(Path(path).relative_to(PROJECT_FOLDER)))
    assert readers == []
