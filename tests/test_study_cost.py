"""benchmarks/study_cost.py: the P3 study estimate is plain arithmetic on unit costs; checked on sums done by hand.

The hand-sized study: one arch × dataset (ResNet-18, CIFAR-10, 30 training epochs), SCRUB only, 1 seed,
1 request, 1 proxy; 1,000 training images, forget 100, val 50, test 200; 2 unlearning epochs with max_steps 1;
RUM subsets of 10 with 1+1+1 epochs. Unit costs: unlearning 100 img/s, training 1,000 img/s, evaluation
1,250 img/s, 2 s per SVC MIA, S = 2. By hand (R_1 = 1,000 − 100 = 900):
  original   1,000 · 30 / 1,000                      = 30 s
  retrain      900 · 30 / 1,000                      = 27 s
  vanilla   (1 · 100 + 2 · 900) / 100                = 19 s
  RUM       3 subsets × (1 · 10 + 1 · 900) / 100     = 27.3 s   (× 1 proxy)
  eval      3 evaluations (retrain, vanilla, RUM) × (1,000 + 50 + 200) / 1,250 = 3 s
  total                                              = 106.3 s; MIA 3 × 2 = 6 CPU-s
"""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "study_cost.py"


def _load():
    spec = importlib.util.spec_from_file_location("study_cost", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


sc = _load()

SMALL = sc.Study(archs=("resnet18",), train_epochs={"cifar10": 30}, algorithms=("scrub",), seeds=1, steps=1,
                 proxies=1, n_train=1_000, forget=100, val=50, test=200, unlearn_epochs=2, unlearn_batch=64,
                 scrub_max_steps={("resnet18", "cifar10"): 1}, rum_subset=10, rum_epochs={"scrub": (1, 1, 1)})
COSTS = sc.UnitCosts(unlearn_img_s={("scrub", "resnet18"): 100.0}, train_img_s={("resnet18", "cifar10"): 1_000.0},
                     eval_img_s=1_250.0, mia_s=2.0, speedup=2.0)


def seconds(est: dict) -> dict:
    return {k: v * 3600 for k, v in est["breakdown_gpu_hours"].items()}


def test_one_cell_one_seed_one_request_is_the_hand_sum():
    est = sc.estimate_study(COSTS, SMALL)
    assert seconds(est) == pytest.approx({"original": 30.0, "retrain": 27.0, "eval": 3.0,
                                          "scrub_vanilla": 19.0, "scrub_rum": 27.3})
    assert est["gpu_hours"] * 3600 == pytest.approx(106.3)
    assert est["gpu_hours_packed"] * 3600 == pytest.approx(106.3 / 2)
    assert est["mia_cpu_hours"] * 3600 == pytest.approx(6.0)
    assert est["gpu_hours_inline_mia"] * 3600 == pytest.approx(112.3)
    assert est["gpu_hours_inline_mia_packed"] * 3600 == pytest.approx(112.3 / 2)
    assert est["counts"] == {"unlearning_runs": 2, "retrains": 1, "originals": 1, "evaluations": 3}
    cell = est["per_arch_dataset_gpu_hours"]["resnet18/cifar10"]
    assert {k: v * 3600 for k, v in cell.items()} == pytest.approx({"original": 30.0, "retrain": 27.0,
                                                                    "unlearn": 46.3})
    assert est["unit_costs"]["unlearn_img_s"] == {"scrub/resnet18": 100.0}  # JSON-ready keys
    assert est["unit_costs"]["eval_images"] == 1_250 and est["unit_costs"]["eval_s_per_run"] == pytest.approx(1.0)


def test_doubling_seeds_doubles_every_part():
    one = seconds(sc.estimate_study(COSTS, SMALL))
    two = seconds(sc.estimate_study(COSTS, dataclasses.replace(SMALL, seeds=2)))
    assert two == pytest.approx({k: 2 * v for k, v in one.items()})
    assert two["scrub_vanilla"] + two["scrub_rum"] == pytest.approx(2 * (19.0 + 27.3))


def test_a_second_request_adds_its_smaller_retain_set():
    one = seconds(sc.estimate_study(COSTS, SMALL))
    two = seconds(sc.estimate_study(COSTS, dataclasses.replace(SMALL, steps=2)))
    # request 2: R_2 = 800 → retrain 24 s, vanilla (100 + 1,600) / 100 = 17 s, RUM 3 × 810 / 100 = 24.3 s,
    # 3 more evaluations; the original is trained once per seed whatever the number of requests.
    assert {k: two[k] - one[k] for k in one} == pytest.approx(
        {"original": 0.0, "retrain": 24.0, "scrub_vanilla": 17.0, "scrub_rum": 24.3, "eval": 3.0})


def test_proxies_scale_only_rum_and_its_evaluations():
    five = seconds(sc.estimate_study(COSTS, dataclasses.replace(SMALL, proxies=5)))
    assert five["scrub_rum"] == pytest.approx(5 * 27.3)
    assert five["eval"] == pytest.approx(1.0 * (1 + 1 + 5))
    assert (five["original"], five["retrain"], five["scrub_vanilla"]) == pytest.approx((30.0, 27.0, 19.0))


def test_neggrad_plus_pairs_forget_batches_with_retain_batches():
    st = dataclasses.replace(SMALL, algorithms=("neggrad_plus",), rum_epochs={"neggrad_plus": (1, 1, 2)})
    costs = dataclasses.replace(COSTS, unlearn_img_s={("neggrad_plus", "resnet18"): 100.0})
    s = seconds(sc.estimate_study(costs, st))
    # 900 retain images in 15 batches of 64 (14 full + 4); forget 100 = [64, 36] cycled: 8 × 64 + 7 × 36 = 764.
    assert s["neggrad_plus_vanilla"] == pytest.approx(2 * (900 + 764) / 100)
    # RUM: a subset of 10 is one batch, paired with each of the 15 retain batches; 1 + 1 + 2 epochs.
    assert s["neggrad_plus_rum"] == pytest.approx(4 * (900 + 15 * 10) / 100)


def test_image_counts():
    assert sc.batch_sizes(0, 64) == [] and sc.batch_sizes(1, 64) == [1]
    assert sc.batch_sizes(65, 64) == [65]          # a lone last example joins the batch before it
    assert sc.batch_sizes(130, 64) == [64, 64, 2]
    assert sc.images_per_epoch("scrub", 900, 100, 64) == 1_000
    assert sc.images_per_epoch("scrub", 900, 100, 64, max_pass=False) == 900
    assert sc.images_per_epoch("neggrad_plus", 900, 100, 64) == 1_664
    assert sc.images_trial(900, 100, epochs=10, max_steps=4) == 9_400


def test_the_paper_grid():
    costs = sc.UnitCosts(unlearn_img_s={(a, m): 1e4 for a in ("scrub", "neggrad_plus")
                                        for m in ("resnet18", "vgg16_bn")},
                         train_img_s={(m, d): 2e4 for m in ("resnet18", "vgg16_bn") for d in ("cifar10", "cifar100")},
                         eval_img_s=5e4, mia_s=1.0)
    est = sc.estimate_study(costs)
    # 4 (arch × dataset) × 5 seeds × 5 requests × 2 algorithms × (vanilla + 5 RUM proxies), one retrain per
    # seed × request × cell, one original per seed × cell, an evaluation of every run and retrain.
    assert est["counts"] == {"unlearning_runs": 1200, "retrains": 100, "originals": 20, "evaluations": 1300}
    assert sc.PAPER_STUDY.eval_images == 60_000
    # CIFAR-100 trains 100 epochs, CIFAR-10 30: at one training speed its original costs 10/3 as much.
    cells = est["per_arch_dataset_gpu_hours"]
    assert cells["resnet18/cifar100"]["original"] == pytest.approx(cells["resnet18/cifar10"]["original"] * 100 / 30)
    assert "R_j" in est["formula"] and "45,000" in est["formula"] and est["paper_a10_gpu_hours"] == 501.6
    assert est["gpu_hours_packed"] == est["gpu_hours"]  # S = 1 by default


def test_needs_no_torch():
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('study_cost', {str(PATH)!r}); "
            "m = importlib.util.module_from_spec(s); sys.modules['study_cost'] = m; s.loader.exec_module(m); "
            "print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
