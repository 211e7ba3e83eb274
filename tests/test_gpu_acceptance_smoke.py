"""The GPU acceptance command's CPU smoke run: `benchmarks/gpu_acceptance.py --tiny` takes every step a GPU run
takes — the unlearning CLI with its original read back and scored, a Ray Tune search at 0.25 (logical) GPU per
trial, the pipeline benchmark's P1/P2/P5 sections, the MIA's distinct rows — on digits, and writes its JSON and
table (about a minute and a half on an idle 2-core CPU; slow: it starts Ray). The figures mean nothing on a CPU;
the checks and the shape of the results are what is tested. The carried CIFAR-10 copy (a JPEG .npz) unpacks into
the layout the project reads."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_store):
    out = tmp_path_factory.mktemp("acceptance") / "acceptance.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the suite's shared store: the digits models and the paper config's finals the other searches build
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--store", str(shared_store)],
                          cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow  # a real Ray search (step b)
def test_every_step_passed_and_says_where_it_ran(tiny_run):
    rec, stdout = tiny_run
    assert rec["passed"] is True and set(rec["steps"]) == {"run", "search", "mia_rows", "pipeline"}
    prov = rec["provenance"]
    assert prov["mode"] == "tiny" and prov["device_type"] == "cpu" and prov["torch"] and prov["command"]
    assert "all checks passed" in stdout and "| (a) run |" in stdout and "| (d) MIA rows |" in stdout


@pytest.mark.slow  # a real Ray search (step b)
def test_the_run_scores_its_original_in_the_cpu_defaults(tiny_run):
    run = tiny_run[0]["steps"]["run"]
    assert all(run["checks"].values()) and len(run["checks"]) == 5
    assert (run["precision"], run["memory_format"], run["device"]) == ("fp32", "channels_last", "cpu")
    assert run["original_test_acc"] >= run["accuracy_floor"] and 0 <= run["tow"] <= 1


@pytest.mark.slow  # a real Ray search (step b)
def test_the_search_ran_its_trials_at_a_quarter_gpu(tiny_run):
    search = tiny_run[0]["steps"]["search"]
    assert search["passed"] is True, search
    assert search["resources"]["gpus_per_trial"] == 0.25 and sum(search["trials"].values()) == 2
    assert search["recommended"]


@pytest.mark.slow  # a real Ray search (step b)
def test_the_pipeline_sections_and_the_mia_rows(tiny_run):
    steps = tiny_run[0]["steps"]
    pipe = steps["pipeline"]
    assert pipe["passed"] and not pipe["errors"]
    assert all(v["img_s"] > 0 for v in pipe["P1"].values()) and "scrub/resnet18" in pipe["P1"]
    assert pipe["P2"]["trials_per_gpu_hour"] > 0 and pipe["P5"]["max_memory_allocated_gib"] is None  # no CUDA
    rows = steps["mia_rows"]
    for precision in ("bf16", "fp32"):
        assert rows[precision]["rows"] == rows["members"] + rows["non_members"]
        assert 0 < rows[precision]["distinct_rows"] <= rows[precision]["rows"]


def test_the_full_run_refuses_a_cpu_in_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "needs a CUDA device" in lines[0], proc.stderr


def test_the_carried_jpeg_copy_unpacks_into_the_layout_the_project_reads(tmp_path):
    """Twenty images per class, JPEG-encoded as benchmarks/README.md packs them, read back by load_dataset."""
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from benchmarks import cifar_copy
    from unlearn_core.data import load_dataset

    rng = np.random.default_rng(0)

    def pack(n):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        files = []
        for im in x:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, "JPEG", quality=75)
            files.append(buf.getvalue())
        return np.frombuffer(b"".join(files), np.uint8), np.cumsum([0] + [len(f) for f in files])

    (tj, to), (sj, so) = pack(200), pack(30)
    train_y, test_y = np.repeat(np.arange(10), 20), np.arange(30) % 10
    npz = tmp_path / "copy.npz"
    np.savez(npz, train_jpeg=tj, train_offsets=to, train_labels=train_y, test_jpeg=sj, test_offsets=so,
             test_labels=test_y)
    root = cifar_copy.unpack(npz, tmp_path / "cifar")
    assert sorted(p.name for p in (root / cifar_copy.FOLDER).iterdir()) == [
        *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    ds = load_dataset("cifar10", root)
    x, y = cifar_copy.decode(np.load(npz), "train")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (180, 20, 30)
    assert np.array_equal(np.sort(np.concatenate([ds.train.y, ds.val.y])), np.sort(y))
    assert np.array_equal(ds.test.x, cifar_copy.decode(np.load(npz), "test")[0])
    assert np.array_equal(x[ds.train_index], ds.train.x)  # the pickles hold the decoded images, in the file's order
