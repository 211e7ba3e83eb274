"""The search itself: connect to Ray, prepare artifacts, run one Tuner per (dataset, arch), then hand its
trials to the final runs (`tuner.final_runs`) and the outputs (`tuner.outputs`).

Kept apart from the CLI (`tuner/search.py`) so tests can call `run_search(settings)` directly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

from unlearn_core.errors import ConfigError

from .claim import Taken, claim, running
from .connect import cluster_address, connect
from .files import write_json, write_text
from .final_runs import finalize_pair
from .interrupts import StudyUpload, TrialEndings, sigterm_as_sigint
from .outputs import best_configs_markdown, trials_table, write_outputs
from .settings import ALL_PAPER_ROWS_FROM, GPU_SHARE, SearchSettings, check_experiment
from .study_storage import dashboard_hint, forget_local_copy, open_storage, study_name, upload
from .trial_schema import trial_row, trial_status

# ASHA's clock is `progress`, percent of a trial's own schedule: rungs at 30 % and 90 % (early ToW says little,
# since every config still sits near the original then), so schedules of different lengths meet at the same share.
MAX_PROGRESS, GRACE, REDUCTION = 100, 30, 3


def asha_rungs() -> tuple[int, ...]:
    """The progress values at which ASHA compares trials (grace · reduction^k below max_t): 30, 90."""
    out, t = [], GRACE
    while t < MAX_PROGRESS:
        out.append(t)
        t *= REDUCTION
    return tuple(out)


def asha(objective: str):
    """The scheduler of a search: ASHA over `progress`, ranking by the selection view of the objective."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="progress", metric=asha_metric(objective), mode="max", max_t=MAX_PROGRESS,
                         grace_period=GRACE, reduction_factor=REDUCTION)


def asha_metric(objective: str) -> str:
    """ASHA needs one metric; with `both` it ranks by ToW (every trial still reports both)."""
    return "sel_tow_mia" if objective == "tow_mia" else "sel_tow"


def log(msg: str) -> None:
    print(msg, flush=True)


def quiet_optuna_search() -> None:
    """OptunaSearch warns for each NaN it is given; NaN is how a trial that ASHA stopped is kept from the sampler."""
    import logging

    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)


def tune_environment() -> None:
    """Tune's settings for a search, set before Ray starts (as Tune reads them)."""
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials use absolute paths; keep cwd for imports
    # Snapshot the experiment state at least every 10 s: a driver killed without warning loses (and --resume
    # re-runs) at most the trial results of the last few seconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
    # Short trials checkpoint every few seconds by design (a retried trial resumes at its last epoch); Tune's
    # "snapshotting triggered multiple times" warning would repeat after every epoch, so it is silenced.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def trial_resources(s: SearchSettings, res: dict, joined: bool = False) -> tuple[float, float, int]:
    """(CPUs, GPUs) per trial and how many trials run at once on this cluster. A joined cluster with no GPU yet
    may be an autoscaling one whose GPU workers start at zero (cluster.yaml): an explicit --gpus-per-trial is
    then kept and the trials wait, pending, for the autoscaler to add GPU nodes."""
    gpus_total = res.get("GPU", 0)
    g = s.gpus_per_trial
    if g is None:
        g = GPU_SHARE if gpus_total else 0.0
    if g > 0 and not gpus_total and not joined:
        raise ConfigError(f"--gpus-per-trial {g} asks for GPUs, but the Ray cluster has none")
    c = s.cpus_per_trial
    limit = int(res.get("CPU", 1) // c)
    if g > 0:
        limit = min(limit, int(gpus_total / g + 1e-9)) if gpus_total else s.num_samples
    return c, g, max(1, s.max_concurrent or limit)


def search_record(s: SearchSettings, resources: Optional[dict] = None) -> dict:
    """search.json: the settings, versions and device, the search and final seeds (disjoint: finals never repeat
    a search run) and, once Ray has started, the trials' resources."""
    from unlearn_core.environment import environment

    return {"settings": s.to_json(), "env": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "search_seed": s.search_seed, "final_seeds": list(s.final_seeds), "resources": resources}


def resume_hint(s: SearchSettings) -> str:
    return f"python -m tuner.search {s.algorithm} --name {s.name} --storage {s.storage} --resume"


def run_search(s: SearchSettings) -> int:
    from unlearn_core.data import load_dataset

    # Everything that can fail on the user's input fails here, before Ray starts or a folder is created.
    datasets = {d: load_dataset(d, s.data_dir, s.split_seed, download=s.download) for d in s.datasets}
    check_experiment(s, datasets)
    meta = f"{s.exp_dir}/search.json"
    if s.resume:
        with running(s.exp_dir):
            return search_claimed(s, datasets)
    try:
        claim(meta, json.dumps(search_record(s), indent=1).encode())
    except Taken:
        raise ConfigError(f"experiment {s.name!r} already exists under {s.storage} (another search claimed it); "
                          "use --resume or another --name") from None
    forget_local_copy(s.optuna_url)
    with running(s.exp_dir):
        return search_claimed(s, datasets)


def search_claimed(s: SearchSettings, datasets: dict) -> int:
    """The search of an experiment this process holds: Ray, prepare, one Tuner per pair, finals, outputs.
    SIGINT or SIGTERM at any moment ends it with 130 and the resume line, no best_configs written."""
    import ray

    from .prepare import prepare
    from .search_metrics import export_wait

    tune_environment()
    try:
        address = cluster_address(s.address)
        res = connect(address, local_gpus=s.local_gpus, dashboard=not s.no_dashboard, log=log)
        sigterm_as_sigint()  # after ray.init, whose own SIGTERM handler (sys.exit) would abort a running Tune
        cpus, gpus, concurrent = trial_resources(s, res, joined=bool(address))
        if gpus and not res.get("GPU"):
            log(f"the cluster has no GPU yet: trials ({gpus:g} GPU each) wait for the autoscaler to add GPU nodes")
        if not s.resume:
            write_json(f"{s.exp_dir}/search.json", search_record(s, {
                "cpus_per_trial": cpus, "gpus_per_trial": gpus, "max_concurrent": concurrent}), indent=1)
        log(f"experiment: {s.exp_dir}\nOptuna study: {dashboard_hint(s.optuna_url)}")
        search_seed, final_seeds = s.search_seed, list(s.final_seeds)
        specs = [s.spec(d, ar, seed) for d, ar in s.pairs for seed in [search_seed, *final_seeds]]
        prepare(specs, datasets, cpus=cpus, gpus=gpus, proxies=(s.proxy,) if s.needs_proxy else (),
                requests=s.requests, ranking_model=s.ranking_model, log=log)

        summary, all_trials = [], []
        for dataset, arch in s.pairs:
            rows, interrupted = tune_pair(s, datasets[dataset], dataset, arch, search_seed, cpus, gpus, concurrent)
            all_trials.extend(rows)
            write_text(f"{s.exp_dir}/trials.csv", trials_table(all_trials).to_csv(index=False))
            if interrupted:
                raise KeyboardInterrupt
            summary.append(finalize_pair(s, datasets[dataset], dataset, arch, rows, final_seeds, cpus, gpus,
                                         log=log))
            write_outputs(s, summary)
    except KeyboardInterrupt:
        log(f"search interrupted; continue with: {resume_hint(s)}")
        ray.shutdown()
        return 130
    log("\n" + best_configs_markdown(summary))
    if address:  # a cluster's Prometheus scrapes the search's gauges: let it see their final values
        time.sleep(export_wait())
    ray.shutdown()
    return 0


def tune_pair(s: SearchSettings, dataset_obj, dataset: str, arch: str, seed: int, cpus: float, gpus: float,
              concurrent: int) -> tuple[list[dict], bool]:
    """Run (or resume) the Tuner of one (dataset, arch); return its trial rows and whether it was interrupted."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    import search_spaces

    from .lost_trials import lost_trial_rows
    from .search_metrics import SearchMetrics
    from .trainable import run_trial

    space = search_spaces.get_space(s.algorithm)
    trainable = tune.with_resources(tune.with_parameters(run_trial, dataset=dataset_obj), {"cpu": cpus, "gpu": gpus})
    storage_path, storage_fs = tune_storage(s.exp_dir)
    path = f"{storage_path}/tune-{dataset}-{arch}"
    name = study_name(s.name, dataset, arch)
    endings = TrialEndings.fresh()
    # Optuna reads `final_sel_*`: NaN until a trial's last evaluation (tuner/trainable.py says why)
    metric, mode = ((["final_sel_tow", "final_sel_tow_mia"], ["max", "max"]) if s.objective == "both"
                    else (f"final_sel_{s.objective}", "max"))
    if tune.Tuner.can_restore(path, storage_filesystem=storage_fs):
        log(f"resuming {s.exp_dir}/tune-{dataset}-{arch}")
        open_storage(s.optuna_url)  # a remote journal's local copy, which the restored sampler reopens
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=storage_fs)
    else:
        first = search_spaces.paper_config(s.algorithm, dataset, arch)
        rest = [c for c in space.paper_configs if c != first] if s.num_samples >= ALL_PAPER_ROWS_FROM else []
        paper = [first] + rest
        extra = list(s.points)  # --points: evaluated before the paper's configs
        points = extra + [c for c in paper if c not in extra]
        searcher = OptunaSearch(
            space.define, metric=metric, mode=mode, points_to_evaluate=points[:s.num_samples],
            sampler=optuna.samplers.TPESampler(seed=s.sampler_seed),
            storage=open_storage(s.optuna_url), study_name=name)
        scheduler = asha(s.objective)
        tuner = tune.Tuner(
            trainable,
            param_space={"spec": dataclasses.asdict(s.spec(dataset, arch, seed)), "space": space.name,
                         "algorithm": space.algorithm, "cpus_per_trial": cpus, "requests": s.requests,
                         "ranking_model": s.ranking_model, "state_dir": f"{s.exp_dir}/trial-state",
                         "rungs": list(asha_rungs()), "mia_at_rungs": asha_metric(s.objective) == "sel_tow_mia"},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.num_samples,
                                        # a trial's process serves the next trial: no new process, no new `import torch`
                                        max_concurrent_trials=concurrent, reuse_actors=True),
            # No Tune checkpoints: each trial keeps its own latest state (tuner/trial_state.py says why).
            run_config=tune.RunConfig(name=f"tune-{dataset}-{arch}", storage_path=storage_path,
                                      storage_filesystem=storage_fs,
                                      callbacks=[endings, StudyUpload(s.optuna_url),
                                                 SearchMetrics(s.name, dataset, arch)],
                                      failure_config=tune.FailureConfig(max_failures=s.max_failures), verbose=1))
    log(f"search: {s.algorithm} on {dataset}/{arch}, {s.num_samples} trials, {concurrent} at once, "
        f"{cpus:g} CPU + {gpus:g} GPU each")
    quiet_optuna_search()
    try:
        rg = tuner.fit()
    finally:
        upload(s.optuna_url)
    results = list(rg)
    cut_off = endings.cut_off([(r.metrics or {}).get("trial_id") or os.path.basename(r.path) for r in results])
    interrupted = bool(cut_off) or len(results) < s.num_samples
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        params = json.dumps(search_spaces.to_config_params(space, r.config)) if r.config else "{}"
        rows.append(trial_row(dataset, arch, m.get("trial_id", os.path.basename(r.path)),
                              trial_status(m, r.error is not None, interrupted), m,
                              str(r.error) if r.error else None, params))
    if not interrupted:
        study = optuna.load_study(study_name=name, storage=open_storage(s.optuna_url))
        lost = lost_trial_rows(f"{s.exp_dir}/trial-state", rows, study, space,
                               metric if isinstance(metric, list) else [metric], dataset, arch)
        for r in lost:
            log(f"trial {r['trial_id']}: finished under a killed driver after its last snapshot, so Tune lost it; "
                "its row comes from its saved state")
        rows += lost
        remove_states(f"{s.exp_dir}/trial-state")  # no trial will be restored any more: free their weights
        close_study(study, space, rows)
        upload(s.optuna_url)
    return rows, interrupted


def tune_storage(exp_dir: str):
    """Tune's storage_path and storage_filesystem for the experiment folder: a local path as it is; a URI through
    the same fsspec filesystem every other file of the search goes through (its endpoint and credentials)."""
    if "://" not in exp_dir:
        return exp_dir, None
    import fsspec
    import pyarrow.fs

    fs, path = fsspec.core.url_to_fs(exp_dir)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def close_study(study, space, rows: list[dict]) -> None:
    """What Optuna sees once every Tune trial has ended: COMPLETE with its final values for a trial that ran
    its whole schedule (a diverged one with 0), PRUNED for one ASHA stopped (OptunaSearch was given NaN for it,
    so it stayed RUNNING: early values of a shorter schedule never reach the sampler), and FAIL for a RUNNING
    trial no Tune trial belongs to (asked for by a driver killed before its next snapshot)."""
    import optuna

    import search_spaces

    stopped = [json.loads(r["params"]) for r in rows if r["status"] == "stopped"]
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        try:
            params = search_spaces.to_config_params(space, t.params)
        except ValueError:
            params = None
        if params in stopped:
            stopped.remove(params)
            study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            log(f"optuna trial {t.number}: RUNNING without a Tune trial (driver killed before snapshot) -> FAIL")


def remove_states(url: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
