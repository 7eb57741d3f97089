"""The Prefect flow: the pipeline's stages as Prefect tasks, in DAG order, over the one library implementation."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_image_artifact, create_link_artifact, create_markdown_artifact,
                               create_table_artifact)
from prefect.cache_policies import NONE

from loraops import search
from loraops.config import Params, load_params
from loraops.core import ConfigError, Layout, LoraopsError
from loraops.core.process import project_lock
from loraops.core.tracking import redact_url
from loraops.pipeline import PIPELINE, dvc, open_pipeline_run, preflight, run_stage

# How often the search stage asks the server about its worker flow runs.
WORKER_POLL_SECONDS = 2


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
    """The search stage as n_jobs parallel workers over one study: Prefect tasks here, or flow runs of
    ``search.workers_deployment`` on its work pool; disabled, the plain stage task."""
    if not params.search.enabled:
        return stage_task.with_options(name="search", task_run_name="search")("search", params, str(layout.root))
    root = str(layout.root)
    deployment = params.search.workers_deployment
    get_run_logger().info("starting stage %s (%d %s)", "search", params.search.n_jobs,
                          f"flow runs of {deployment}" if deployment else "worker tasks")
    prepared = search_call_task.with_options(task_run_name="search-prepare")("prepare", params, root)
    if deployment:
        run_worker_deployments(params, root, prepared["study_name"])
    else:
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


def check_search_fan_out(params: Params, layout: Layout) -> None:
    """Before any stage runs: a search that fans out needs a storage other machines reach and a deployment of
    the worker flow on the server (else every stage before it would run first, then the search would fail)."""
    name = params.search.workers_deployment
    if not params.search.enabled or not name:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    storage = search.require_shared_storage(params, layout)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            server = PREFECT_API_URL.value() or "the ephemeral server (PREFECT_API_URL is unset)"
            raise ConfigError(f"search.workers_deployment {name!r}: no such deployment on {server}; create it with "
                              "`loraops deploy --name search-worker` and start a worker on its pool") from None
    get_run_logger().info("search: %d flow runs of %s on work pool %s, sharing the study in %s",
                          params.search.n_jobs, name, deployment.work_pool_name, storage)


def run_worker_deployments(params: Params, root: str, study: str) -> None:
    """n_jobs flow runs of ``search.workers_deployment``, started at once as subflows of this flow run (the UI
    links them), awaited all; one line names every run that did not complete. They get the params as this
    run has them and the study's name, never its storage URL: each worker's environment names that."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    name, count = params.search.workers_deployment, params.search.n_jobs
    values = params.model_dump(mode="json")
    runs = [run_deployment(name, parameters={"root": root, "worker": i, "study": study, "params": values},
                           flow_run_name=f"search-worker-{i}", timeout=0)  # started now, awaited below
            for i in range(count)]
    get_run_logger().info("search: waiting for flow runs %s of %s",
                          ", ".join(r.name for r in runs), name)
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(r.id) for r in runs]
            if all(r.state is not None and r.state.is_final() for r in runs):
                break
            time.sleep(WORKER_POLL_SECONDS)
    failed = [r for r in runs if not r.state.is_completed()]
    if failed:
        raise LoraopsError(f"search: {len(failed)} of {count} worker flow run(s) of {name} did not complete: "
                           + "; ".join(f"{r.name} {r.state.type.value}: {first_line(r.state.message)}" for r in failed))


def first_line(message: str | None) -> str:
    lines = redact_url(message or "").strip().splitlines()
    return lines[0] if lines else "(no message)"


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
    check_search_fan_out(params, layout)
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
