"""Where the detect stage's per-file work runs (``detect.executor``): local processes or a Dask cluster.

``local`` spreads files over ``detect.workers`` processes. ``dask`` sends them, in chunks of
``detect.dask_chunk`` (one Prefect task each), to a Dask cluster through Prefect's
``DaskTaskRunner``; every worker process builds its detector once. Either way, results come
back in input order, so the crops are the same whichever executor ran them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.parallel import parallel_map, resolve_workers
from anime_avatar.core.params import DetectParams
from anime_avatar.data.detection import Detector, FileJob, FileResult, build_detector, detect_file, resolve_cascade

# Each worker process (local or Dask) builds one detector per params (the cascade and nvxs models load once).
_DETECTORS: dict[str, Detector] = {}
_WORKER_PARAMS: list[DetectParams] = []  # the params of this local worker process


def _detector(params: DetectParams) -> Detector:
    key = params.model_dump_json()
    if key not in _DETECTORS:
        _DETECTORS[key] = build_detector(params)
    return _DETECTORS[key]


def _init_worker(params: DetectParams) -> None:
    _WORKER_PARAMS[:] = [params]
    _detector(params)


def _detect_in_worker(job: FileJob) -> FileResult:
    params = _WORKER_PARAMS[0]
    return detect_file(job, _detector(params), params.margin, params.image_size, params.max_side)


def local_results(jobs: Sequence[FileJob], params: DetectParams) -> Iterator[FileResult]:
    """Detect over local processes (``detect.workers``), in input order."""
    return parallel_map(
        _detect_in_worker, jobs, params.workers, desc=f"detect ({params.detector})",
        initializer=_init_worker, initargs=(params,), unit="img", workers_key="detect.workers",
    )  # fmt: skip


def dask_results(jobs: Sequence[FileJob], params: DetectParams) -> list[FileResult]:
    """Detect every job on a Dask cluster (``detect.dask_address``, else a local one); results in input order."""
    from anime_avatar.core.prefect_env import apply_prefect_defaults

    apply_prefect_defaults()
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_dask import DaskTaskRunner

    @task(name="detect-chunk", cache_policy=NO_CACHE)
    def detect_chunk(chunk: list[FileJob], params: DetectParams) -> list[FileResult]:
        detector = _detector(params)
        return [detect_file(job, detector, params.margin, params.image_size, params.max_side) for job in chunk]

    if params.dask_address:
        runner = DaskTaskRunner(address=params.dask_address)
    else:
        cluster = {"n_workers": resolve_workers(params.workers), "threads_per_worker": 1, "dashboard_address": None}
        runner = DaskTaskRunner(cluster_kwargs=cluster)
    chunks = [list(jobs[i : i + params.dask_chunk]) for i in range(0, len(jobs), params.dask_chunk)]

    @flow(name="anime-avatar-detect", task_runner=runner, log_prints=True)
    def detect_on_dask() -> list[FileResult]:
        futures = [detect_chunk.submit(chunk, params) for chunk in chunks]
        print(f"{len(jobs)} images in {len(chunks)} tasks on {params.dask_address or 'a local Dask cluster'}")
        return [result for future in futures for result in future.result()]

    try:
        return detect_on_dask()
    except (OSError, TimeoutError) as err:  # distributed's "Timed out trying to connect to tcp://…"
        where = f"detect.dask_address {params.dask_address}" if params.dask_address else "a local Dask cluster"
        raise UserError(f"detect.executor dask: {where} did not answer ({first_line(err)}): start the "
                        "scheduler, correct the address, or use detect.executor local") from None  # fmt: skip
    except RuntimeError as err:
        if "Prefect API" not in str(err):
            raise
        raise UserError(f"detect.executor dask runs through Prefect, whose server did not answer ({first_line(err)}): "
                        "set PREFECT_API_URL to a running server (make prefect-server), or use detect.executor "
                        "local") from None  # fmt: skip


def detect_results(jobs: Sequence[FileJob], params: DetectParams) -> Iterable[FileResult]:
    """Per-file detection on the configured executor (``detect.executor``), in input order."""
    if params.detector == "lbp":
        # Resolve (and, if needed, download) the cascade once, before any worker starts.
        params = params.model_copy(update={"cascade_path": str(resolve_cascade(params.cascade_path))})
    if params.executor == "dask":
        return dask_results(jobs, params)
    return local_results(jobs, params)
