"""The GPU benchmark's CPU smoke run: `benchmarks/pipeline.py --tiny` runs end to end and writes every section.

The benchmark is a script, not a test (benchmarks/ stays out of `testpaths`); this only makes sure the GPU run
a later session makes will not die on a code path a CPU can reach: the project pipeline, the classic DataLoader
baseline, two concurrent trial processes with their barrier, one full trial with the SVC MIA (through the run
driver's calls, and once through a whole `Run`), the artifact store, and the study estimate. The figures
themselves mean nothing on a CPU and are not judged.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pipeline.py"


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def mean_positive(d: dict) -> bool:
    return isinstance(d, dict) and positive(d.get("mean")) and d.get("n", 0) >= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tmp.json"
    # CPU only, one thread per process: the CI runner has 2 cores and the run starts 2 worker processes plus
    # DataLoader workers.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.timeout(240)
def test_provenance(tiny_run):
    rec, stdout = tiny_run
    prov = rec["provenance"]
    for key in ("device", "torch", "date", "argv", "command", "mode", "data", "cpus"):
        assert prov.get(key) not in (None, ""), key
    assert prov["mode"] == "tiny" and prov["device_type"] == "cpu"
    assert "--tiny" in prov["argv"]
    assert "CPU FIGURES" in stdout and prov["torch"] in stdout  # the header and the table were printed
    assert "errors" not in rec


@pytest.mark.timeout(240)
def test_p1_sections(tiny_run):
    p1 = tiny_run[0]["P1"]
    for name in ("scrub/resnet18", "neggrad_plus/resnet18", "scrub/vgg16_bn", "neggrad_plus/vgg16_bn"):
        assert mean_positive(p1["project"][name]["img_s"]), name
        assert positive(p1["project"][name]["images_per_epoch"])
        assert positive(p1["ratio_vs_classic"][name])
    for arch in ("resnet18", "vgg16_bn"):
        assert mean_positive(p1["classic"][arch]["img_s"]), arch
    two = p1["concurrency"]["plain"]["levels"]["2"]
    assert positive(two["aggregate_img_s"]) and two["processes"] == 2
    assert list(p1["concurrency"]["plain"]["levels"]) == ["2"]  # --tiny runs only 2 processes
    assert "note" in p1["concurrency"]["mps"]  # no CUDA: skipped, with the reason
    assert positive(p1["best_aggregate"]["ratio_vs_classic"])


@pytest.mark.timeout(240)
def test_p2_p5_artifacts(tiny_run):
    rec = tiny_run[0]
    p2 = rec["P2"]
    for key in ("unlearn_s", "eval_s", "mia_s"):
        assert mean_positive(p2[key]), key
    assert positive(p2["trials_per_gpu_hour"]) and positive(p2["trials_per_gpu_hour_inline_mia"])
    assert 0.0 <= p2["metrics_last"]["mia"] <= 1.0
    assert p2["eval_images"] == sum(p2["sizes"].values())  # metrics.evaluate predicts each set once
    run = p2["run_driver"]  # --tiny trains the original and the retrain, so one trial drives a whole Run
    assert positive(run["wall_s"]) and positive(run["unlearn_s"]) and run["rows"] == p2["config"]["epochs"]
    assert 0.0 <= run["tow"] <= 1.0 and 0.0 <= run["metrics"]["mia"] <= 1.0 and run["diverged"] is None
    p5 = rec["P5"]
    for key in ("max_memory_allocated_gib", "max_memory_reserved_gib"):
        assert key in p5 and (p5[key] is None or positive(p5[key]))
    art = rec["artifacts"]
    assert positive(art["original_s"]["value"]) and positive(art["retrain_s"]["value"])
    assert art["original_s"]["kind"].startswith("measured")
    assert mean_positive(art["store"]["save_s"]) and mean_positive(art["store"]["load_s"])
    assert all(mean_positive(v["epoch_s"]) for v in art["train_epoch"].values())


@pytest.mark.timeout(240)
def test_p3_and_targets(tiny_run):
    rec = tiny_run[0]
    p3 = rec["P3"]
    assert "formula" in p3 and "R_j" in p3["formula"]
    for key in ("gpu_hours", "gpu_hours_packed", "gpu_hours_inline_mia", "mia_cpu_hours"):
        assert positive(p3[key]), key
    assert p3["counts"] == {"unlearning_runs": 1200, "retrains": 100, "originals": 20,
                            "evaluations": p3["counts"]["evaluations"]}
    names = [t["name"] for t in rec["targets"]]
    assert names == ["P1", "P2", "P3", "P5"]
    assert all(t["met"] is None for t in rec["targets"])  # a CPU run judges no GPU target


def test_benchmarks_import_no_ray_or_optuna():
    """The GPU machines have neither: every benchmark module must import without them."""
    mods = ["benchmarks." + m for m in ("pipeline", "timing", "workload", "throughput", "classic", "concurrency",
                                       "training_cost", "trial_cost", "study_cost", "report", "gpu_acceptance",
                                       "cifar_copy", "memory_format")]
    code = (f"import importlib, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "torch" in loaded and not {"ray", "optuna"} & loaded
