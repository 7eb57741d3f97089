"""The Prefect flow: the pipeline's stages as Prefect tasks, in DAG order, over the one library implementation."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_image_artifact, create_link_artifact, create_markdown_artifact,
                               create_table_artifact)
from prefect.cache_policies import NONE

from loraops import search
from loraops.config import Params, load_params
from loraops.core import Layout
from loraops.core.process import project_lock
from loraops.pipeline import PIPELINE, dvc, open_pipeline_run, preflight, run_stage


@task(cache_policy=NONE)
def stage_task(name: str, params: Params, root: str) -> dict:
    get_run_logger().info("starting stage %s", name)
    return run_stage(name, params, Layout(Path(root)))


@task(cache_policy=NONE)
def search_worker_task(params: Params, root: str, worker: int) -> dict:
    """One of search.n_jobs workers on the shared study (the library's worker, in its own process)."""
    return search.run_worker_isolated(params, Layout(Path(root)), worker)


@task(cache_policy=NONE)
def search_call_task(call: str, params: Params, root: str) -> dict:
    return {"prepare": search.prepare_search, "finish": search.finish_search}[call](params, Layout(Path(root)))


def search_stage(params: Params, layout: Layout) -> dict:
    """The search stage as n_jobs parallel Prefect tasks over one study; disabled, the plain stage task."""
    if not params.search.enabled:
        return stage_task.with_options(name="search", task_run_name="search")("search", params, str(layout.root))
    root = str(layout.root)
    get_run_logger().info("starting stage %s (%d worker tasks)", "search", params.search.n_jobs)
    search_call_task.with_options(task_run_name="search-prepare")("prepare", params, root)
    workers = [search_worker_task.with_options(task_run_name=f"search-worker-{i}").submit(params, root, i)
               for i in range(params.search.n_jobs)]
    for worker in workers:
        worker.result()
    choice = search_call_task.with_options(task_run_name="search-select")("finish", params, root)
    create_table_artifact(key="search-trials", table=search.read_table(layout),
                          description=f"search trials; chosen: trial {choice['trial']} (r={choice['lora']['r']})")
    create_markdown_artifact(key="search-choice", description="search result",
                             markdown=(layout.search_dir / "trials.md").read_text())
    return choice


@task(cache_policy=NONE)
def record_in_dvc_lock(root: str) -> bool:
    """Record the run's outputs in dvc.lock (and the DVC cache), so a following `dvc repro` has nothing to do.

    Only valid when the run used params.yaml as it is on disk; the caller skips it for -S overrides.
    """
    if not dvc.is_dvc_project(Path(root)):
        get_run_logger().info("not a DVC project: outputs are not recorded in dvc.lock")
        return False
    dvc.commit(Path(root), [])
    return True


@task(cache_policy=NONE)
def open_run(params: Params, root: str) -> str:
    """The pipeline's MLflow run, opened now so that its duration is the flow's (register closes it)."""
    return open_pipeline_run(params, Layout(Path(root)))


def show_comparison(layout: Layout) -> None:
    """The comparison picture (base, adapter, full fine-tune; headline metric and retention on one axis)."""
    import base64

    png = layout.comparison_png
    if png.is_file():
        create_image_artifact(image_url="data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(),
                              key="model-comparison",
                              description="base vs adapter vs full fine-tune: headline metric and retention, "
                                          "with intervals, on one axis")


def link_data_docs(layout: Layout) -> None:
    index = layout.validation_docs / "index.html"
    if index.is_file():
        create_link_artifact(key="data-docs", link=index.as_uri(), link_text="Great Expectations Data Docs",
                             description="Validation of this run's dataset")


@flow(name="loraops-pipeline", log_prints=True)
def pipeline(root: str = ".", overrides: list[str] | None = None, params_file: str | None = None) -> dict:
    """Run every stage of the DAG in order; the first failure stops the flow (nothing after it runs).

    ``params_file`` (default: the project's ``params.yaml``) is the one file read, and every stage runs with
    it; dvc.lock is updated only when that is params.yaml as on disk (no ``-S`` overrides, no other file).
    The project's lock is held throughout, so no other run or stage writes the same outputs meanwhile.
    """
    layout = Layout(Path(root).resolve())
    source = Path(params_file).resolve() if params_file else layout.params_file
    with project_lock(layout.cache_dir, f"loraops run ({source.name})"):
        return _run_pipeline(layout, load_params(source, overrides or []), source, overrides or [])


def _run_pipeline(layout: Layout, params: Params, source: Path, overrides: list[str]) -> dict:
    preflight(params, layout)
    run_id = open_run(params, str(layout.root))
    get_run_logger().info("MLflow run %s (the whole pipeline; see `loraops ui`)", run_id)
    results = {}
    for name in PIPELINE:
        try:
            if name == "search":
                results[name] = search_stage(params, layout)
                continue
            results[name] = stage_task.with_options(name=name, task_run_name=name)(name, params, str(layout.root))
        finally:
            if name == "validate":  # pass or fail, the Data Docs say why
                link_data_docs(layout)
            if name == "evaluate" and name in results:
                show_comparison(layout)
    if overrides or source != layout.params_file:
        get_run_logger().info("params from %s%s: dvc.lock left as it is (it describes params.yaml)", source.name,
                              " with -S overrides" if overrides else "")
    else:
        record_in_dvc_lock(str(layout.root))
    registered = results["register"]
    report = layout.eval_report.read_text() if layout.eval_report.is_file() else ""
    create_markdown_artifact(
        key="loraops-run", description="loraops pipeline result",
        markdown=(f"# loraops run\n\nRegistered **{registered['model_name']}** version {registered['version']} "
                  f"(MLflow run `{registered['run_id']}`).\n\n{report}"))
    return results
