"""The detect stage's per-file work on a Dask cluster, through Prefect's DaskTaskRunner.

Chosen by ``detect.executor: dask``. Files go to the cluster in chunks of
``detect.dask_chunk`` (one Prefect task each), every worker process builds its
detector once, and results come back in input order, so the crops are the
same as a local run's.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from anime_avatar.detection import Detector, FileJob, FileResult, build_detector, detect_file
from anime_avatar.parallel import resolve_workers
from anime_avatar.params import DetectParams

_DETECTORS: dict[str, Detector] = {}


def _detector(params: DetectParams) -> Detector:
    key = params.model_dump_json()
    if key not in _DETECTORS:
        _DETECTORS[key] = build_detector(params)
    return _DETECTORS[key]


@task(name="detect-chunk", cache_policy=NO_CACHE)
def detect_chunk(jobs: list[FileJob], params: DetectParams) -> list[FileResult]:
    detector = _detector(params)
    return [detect_file(job, detector, params.margin, params.image_size) for job in jobs]


def task_runner(params: DetectParams) -> DaskTaskRunner:
    if params.dask_address:
        return DaskTaskRunner(address=params.dask_address)
    cluster = {"n_workers": resolve_workers(params.workers), "threads_per_worker": 1, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs=cluster)


def dask_results(jobs: Sequence[FileJob], params: DetectParams) -> list[FileResult]:
    """Detect every job on the cluster; results in input order."""
    chunks = [list(jobs[i : i + params.dask_chunk]) for i in range(0, len(jobs), params.dask_chunk)]

    @flow(name="anime-avatar-detect", task_runner=task_runner(params), log_prints=True)
    def detect_on_dask() -> list[FileResult]:
        futures = [detect_chunk.submit(chunk, params) for chunk in chunks]
        print(f"{len(jobs)} images in {len(chunks)} tasks on {params.dask_address or 'a local Dask cluster'}")
        return [result for future in futures for result in future.result()]

    return detect_on_dask()
