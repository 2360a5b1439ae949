"""Sensors: retrain when the DVC data version of the raw dataset changes."""


from pathlib import Path

import yaml
from dagster import RunRequest, SensorEvaluationContext, SkipReason, sensor

DVC_FILE = Path("data.dvc")


def dvc_md5(dvc_file: Path = DVC_FILE) -> str | None:
    """The md5 recorded in a .dvc file, or None when the file is missing."""
    if not dvc_file.exists():
        return None
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


@sensor(job_name="ampere_pipeline", minimum_interval_seconds=30, description="Requests a retraining run when data.dvc records a new md5 (cursor = md5).")
def dvc_data_sensor(context: SensorEvaluationContext):
    """Fires once per new DVC data version."""
    md5 = dvc_md5()
    if md5 is None:
        return SkipReason(f"{DVC_FILE} not found")
    if md5 == context.cursor:
        return SkipReason(f"data version {md5} already seen")
    context.update_cursor(md5)
    return RunRequest(run_key=f"data-{md5}", tags={"ampere/data_version": md5})
