"""Text-source ablation benchmark: runs the Dagster job `ampere_ablation` in process and prints
mean ± std of mR1 and the six R@1 per text source over seeds.

Needs a workspace where `ampere pipeline --text-source summary` has run (it reuses that run's
raw items, LLM summaries and frame features). Usage:

    python benchmarks/ablation.py --workspace workspace [--seeds 0 1 2] [--train FIELD=VALUE ...]
"""

import argparse
import time
from pathlib import Path

from ampere.settings import Settings
from orchestration.cli import train_setting, use_dagster_home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="the project's home (default: $AMPERE_HOME, else the project folder)")
    parser.add_argument("--workspace", type=Path, help="default: the home's workspace/")
    parser.add_argument("--dataset", type=Path, help="default: the home's data/")
    parser.add_argument("--sources", nargs="+", default=["none", "raw", "keywords", "summary", "text-only"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train", type=train_setting, action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field for every cell (repeatable), as for `ampere pipeline`")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the home's MLflow store")
    args = parser.parse_args()
    home = Settings.resolve(home=args.home)
    use_dagster_home(home)
    workspace, dataset = (args.workspace or home.local_workspace).resolve(), (args.dataset or home.dataset).resolve()
    from orchestration.ablation import ABLATION_JOB
    from orchestration.definitions import build_defs
    from orchestration.in_process import execute_in_process
    from orchestration.instance import open_instance

    defs = build_defs(
        workspace=str(workspace),
        dataset=str(dataset),
        tracking_uri=args.tracking_uri or home.tracking_uri,
        artifact_root=str(home.artifact_root),
        repo_dir=str(home.home),
    )
    config = {"sources": args.sources, "seeds": args.seeds, **dict(args.train)}
    started = time.perf_counter()
    result = execute_in_process(
        defs.resolve_job_def(ABLATION_JOB),
        run_config={"ops": {"ablation_study": {"config": config}}}, instance=open_instance()
    )
    print(f"\nablation finished in {time.perf_counter() - started:.0f} s (Dagster run {result.run_id})\n")
    print((workspace / "ablation" / "table.md").read_text())


if __name__ == "__main__":
    main()
