"""P3: what the paper's whole study costs on one GPU, priced from measured unit costs. Pure arithmetic.

    costs = UnitCosts(unlearn_img_s={("scrub", "resnet18"): 9e3, ...}, train_img_s={("resnet18", "cifar10"): 2e4, ...},
                      eval_img_s=5e4, mia_s=1.5, speedup=3.0)
    estimate_study(costs)            # the paper's grid (PAPER_STUDY); any other `Study` prices another grid

Every job is counted in images (`images_per_epoch`, `images_trial`) and divided by the measured images per
second of that kind of job; `formula(study)` spells the sum out and goes into the JSON. No torch here: the
unit test checks the sums by hand (tests/test_study_cost.py), and P1's image counts come from here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


def batch_sizes(n: int, bs: int) -> list[int]:
    """Sizes of the batches `DeviceData.batches(bs)` yields for n examples (a lone last example joins its
    predecessor)."""
    if n <= 0:
        return []
    sizes = [bs] * (n // bs) + ([n % bs] if n % bs else [])
    if bs > 1 and len(sizes) > 1 and sizes[-1] == 1:
        sizes.pop()
        sizes[-1] += 1
    return sizes


def images_per_epoch(algorithm: str, n_retain: int, n_forget: int, bs: int, *, max_pass: bool = True) -> int:
    """Images the student processes in one epoch: SCRUB forget pass (in max-step epochs) + retain pass;
    NegGrad+ every retain batch plus the forget batch it is paired with (forget batches cycle)."""
    if algorithm == "scrub":
        return (n_forget if max_pass else 0) + n_retain
    fs = batch_sizes(n_forget, bs)
    nb = len(batch_sizes(n_retain, bs))
    return n_retain + (sum(fs[i % len(fs)] for i in range(nb)) if fs else 0)


def images_trial(n_retain: int, n_forget: int, epochs: int, max_steps: int) -> int:
    """Images of a SCRUB run: `max_steps` forget passes and `epochs` retain passes."""
    return max_steps * n_forget + epochs * n_retain


@dataclass(frozen=True)
class Study:
    """A grid of unlearning runs; the defaults are the paper's (Table D.1, Tables C.1–C.4)."""

    archs: tuple[str, ...] = ("resnet18", "vgg16_bn")
    train_epochs: Mapping[str, int] = field(default_factory=lambda: {"cifar10": 30, "cifar100": 100})  # by dataset
    algorithms: tuple[str, ...] = ("scrub", "neggrad_plus")
    seeds: int = 5
    steps: int = 5                      # sequential deletion requests per run
    proxies: int = 5                    # RUM variants per algorithm (one per memorization proxy)
    n_train: int = 45_000
    forget: int = 3_000                 # per request
    val: int = 5_000
    test: int = 10_000
    unlearn_epochs: int = 10
    unlearn_batch: int = 256
    scrub_max_steps: Mapping[tuple[str, str], int] = field(default_factory=lambda: {  # Table C.2
        ("resnet18", "cifar10"): 4, ("vgg16_bn", "cifar10"): 7,
        ("resnet18", "cifar100"): 5, ("vgg16_bn", "cifar100"): 7})
    rum_subset: int = 1_000             # RUM unlearns a request as 3 subsets of this size (Table C.4)
    rum_epochs: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: {
        "scrub": (10, 10, 10), "neggrad_plus": (5, 5, 10)})
    paper_a10_gpu_hours: float = 501.6  # Table D.1, NVIDIA A10, the same study

    @property
    def eval_images(self) -> int:
        """Images one final evaluation predicts: `metrics.evaluate` predicts forget, retain, val and test once
        each and the MIA reuses those predictions (priced at request 1's sets, the largest)."""
        return self.n_train + self.val + self.test


PAPER_STUDY = Study()


@dataclass(frozen=True)
class UnitCosts:
    """Measured speeds the study is priced with."""

    unlearn_img_s: Mapping[tuple[str, str], float]  # (algorithm, arch) → images/s of unlearning epochs (P1)
    train_img_s: Mapping[tuple[str, str], float]    # (arch, dataset) → images/s of training epochs at that
                                                    # dataset's batch (CIFAR-10 256, CIFAR-100 128)
    eval_img_s: float                               # images/s of the final evaluation's predictions (P2)
    mia_s: float                                    # CPU seconds of one SVC MIA (P2)
    speedup: float = 1.0                            # S: aggregate speed-up of packed processes over one (P1)


def formula(st: Study = PAPER_STUDY) -> str:
    algs, archs, dss = ",".join(st.algorithms), ",".join(st.archs), ",".join(st.train_epochs)
    rum = "; ".join(f"{a} {'+'.join(map(str, e))}" for a, e in st.rum_epochs.items() if a in st.algorithms)
    return (
        f"GPU-s = Σ_arch∈{{{archs}}} Σ_ds∈{{{dss}}} seeds × [ T_original(arch,ds) + Σ_j=1..steps ( "
        f"T_retrain(arch,ds,R_j) + T_eval + Σ_alg∈{{{algs}}} ( T_unlearn(alg,arch,ds,R_j) + proxies × "
        f"T_rum(alg,arch,ds,R_j) + (1 + proxies) × T_eval ) ) ]; seeds = {st.seeds}, steps = {st.steps}, proxies = "
        f"{st.proxies}; R_j = {st.n_train:,} − {st.forget:,}·j (sequential retain); T_unlearn = images / P1 img/s "
        f"(SCRUB: max_steps·{st.forget:,} + {st.unlearn_epochs}·R_j; NegGrad+: {st.unlearn_epochs}·(R_j + paired "
        f"forget batches of {st.unlearn_batch})); T_rum = the same over RUM's 3 subsets of {st.rum_subset:,} "
        f"(epochs {rum}); T_original = {st.n_train:,} · epochs / training img/s, T_retrain = R_j · epochs / "
        f"training img/s (epochs by dataset: {dict(st.train_epochs)}); T_eval = {st.eval_images:,} evaluation "
        "images (forget + retain + val + test, each predicted once; the MIA reuses them) / P2 evaluation img/s; "
        "the SVC MIA's CPU-s (P2, per evaluation) are counted apart (off the GPU's critical path) and in the "
        "'inline' variants; packed = GPU-h / S, S = best P1 aggregate concurrency speed-up over one process (an "
        "estimate: it assumes every job packs like the measured one)."
    )


def estimate_study(costs: UnitCosts, st: Study = PAPER_STUDY) -> dict:
    """GPU-hours of the study `st` from the unit costs; the sum is `formula(st)`."""
    F, N, E, bs = st.forget, st.n_train, st.unlearn_epochs, st.unlearn_batch
    t_eval = st.eval_images / costs.eval_img_s

    def unlearn_s(alg: str, arch: str, ds: str, R: int, n_forget: int, epochs_list) -> float:
        images = 0
        for ep in epochs_list:
            if alg == "scrub":
                images += images_trial(R, n_forget, ep, min(st.scrub_max_steps[(arch, ds)], ep))
            else:
                images += ep * images_per_epoch(alg, R, n_forget, bs)
        return images / costs.unlearn_img_s[(alg, arch)]

    parts = {"original": 0.0, "retrain": 0.0, "eval": 0.0}
    parts.update({f"{a}_vanilla": 0.0 for a in st.algorithms}, **{f"{a}_rum": 0.0 for a in st.algorithms})
    n_eval, per_cell = 0, {}
    for arch in st.archs:
        for ds, epochs in st.train_epochs.items():
            tr = costs.train_img_s[(arch, ds)]
            cell = {"original": N * epochs / tr, "retrain": 0.0, "unlearn": 0.0}
            for j in range(1, st.steps + 1):
                R = N - F * j
                cell["retrain"] += R * epochs / tr
                for alg in st.algorithms:
                    van = unlearn_s(alg, arch, ds, R, F, (E,))
                    rum = unlearn_s(alg, arch, ds, R, st.rum_subset, st.rum_epochs[alg])
                    parts[f"{alg}_vanilla"] += st.seeds * van
                    parts[f"{alg}_rum"] += st.seeds * st.proxies * rum
                    cell["unlearn"] += van + st.proxies * rum
                n_eval += st.seeds * (1 + len(st.algorithms) * (1 + st.proxies))  # the retrain + every run
            per_cell[f"{arch}/{ds}"] = {k: v * st.seeds / 3600 for k, v in cell.items()}
            parts["original"] += st.seeds * cell["original"]
            parts["retrain"] += st.seeds * cell["retrain"]
    parts["eval"] = n_eval * t_eval
    gpu_s = sum(parts.values())
    mia_cpu_s = n_eval * costs.mia_s
    S = costs.speedup
    cells = len(st.archs) * len(st.train_epochs)
    return {
        "formula": formula(st),
        "gpu_hours": gpu_s / 3600,                                  # one job at a time
        "gpu_hours_packed": gpu_s / 3600 / S,                       # S jobs' worth per GPU (estimate)
        "gpu_hours_inline_mia": (gpu_s + mia_cpu_s) / 3600,
        "gpu_hours_inline_mia_packed": (gpu_s + mia_cpu_s) / 3600 / S,
        "mia_cpu_hours": mia_cpu_s / 3600,
        "speedup_S": S,
        "unit_costs": {"unlearn_img_s": {"/".join(k): v for k, v in costs.unlearn_img_s.items()},
                       "train_img_s": {"/".join(k): v for k, v in costs.train_img_s.items()},
                       "eval_img_s": costs.eval_img_s, "eval_images": st.eval_images,
                       "eval_s_per_run": t_eval, "mia_s_per_run": costs.mia_s},
        "breakdown_gpu_hours": {k: v / 3600 for k, v in parts.items()},
        "per_arch_dataset_gpu_hours": per_cell,
        "counts": {"unlearning_runs": cells * st.seeds * st.steps * len(st.algorithms) * (1 + st.proxies),
                   "retrains": cells * st.seeds * st.steps, "originals": cells * st.seeds, "evaluations": n_eval},
        "assumptions": [
            "CIFAR-100 unlearning costs what CIFAR-10's does per image (10 unlearning epochs, its own max_steps); "
            "its training is priced with a measured batch-128 epoch × 100 epochs",
            "VGG-16-bn evaluation priced at ResNet-18's measured evaluation speed (an upper bound)",
            "RUM's memorization proxies come from learning events recorded while training the original: free",
            "one final evaluation per run and per retrain, priced at request 1's sets; the MIA's CPU seconds as "
            "measured in P2 (in --tiny they are for the tiny sets, not CIFAR's)",
        ],
        "paper_a10_gpu_hours": st.paper_a10_gpu_hours,
    }
