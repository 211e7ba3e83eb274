#!/usr/bin/env python3
"""Seconds per training step and per evaluation pass, contiguous against channels_last, on one device.

    python benchmarks/memory_format.py              # this machine's CPU (one thread), or --device cuda
    python benchmarks/memory_format.py --steps 2    # a quick look

Why channels_last is the default memory format on every device (unlearn_core/numerics.py): for each model and
input size below, the same SGD step (forward, cross-entropy, backward, momentum update) and the same eval-mode
forward pass are timed in both layouts, alternating, and the table prints both and their ratio. Random inputs:
the layout's cost does not depend on the values. Times are CPU seconds of this process on a CPU (wall on CUDA).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as a trial gets; must precede the torch import

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from unlearn_core.environment import use_cpus  # noqa: E402
from unlearn_core.models import create_model  # noqa: E402

# (arch, width, channels, side, batch): the test suite's digits models, and CIFAR-shaped full and reduced ones
CASES = [("resnet18", 0.125, 1, 16, 256), ("vgg16_bn", 0.125, 1, 16, 256), ("resnet18", 0.25, 3, 32, 128),
         ("resnet18", 1.0, 3, 32, 64), ("vgg16_bn", 1.0, 3, 32, 64)]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def measure(case: tuple, layout: str, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds per SGD step, seconds per eval pass) of one model in one layout, after 2 warm-up steps."""
    arch, width, chans, side, batch = case
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]
    model = create_model(arch, 10, width=width, in_chans=chans).to(device).to(memory_format=fmt)
    x = torch.randn(batch, chans, side, side, device=device).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    t = clock(device)
    for _ in range(steps):
        step()
    train = (clock(device) - t) / steps
    model.eval()
    with torch.no_grad():
        t = clock(device)
        for _ in range(steps):
            model(x)
        evaluate = (clock(device) - t) / steps
    return train, evaluate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model, layout and round (default 10)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of both layouts, averaged (default 2)")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    device = torch.device(a.device)
    threads = use_cpus(float(os.environ["OMP_NUM_THREADS"]))
    print(f"device {device}; torch {torch.__version__}; {threads} thread(s); "
          f"{a.steps} steps x {a.rounds} rounds per layout")
    print("| model | input | step contiguous / channels_last (s) | ratio "
          "| eval contiguous / channels_last (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        got = {k: [0.0, 0.0] for k in LAYOUTS}
        for r in range(a.rounds):
            for layout in (LAYOUTS if r % 2 == 0 else reversed(list(LAYOUTS))):
                tr, ev = measure(case, layout, a.steps, device)
                got[layout][0] += tr / a.rounds
                got[layout][1] += ev / a.rounds
        (tc, ec), (tl, el) = got["contiguous"], got["channels_last"]
        arch, width, chans, side, batch = case
        print(f"| {arch} ×{width} | {batch}×{chans}×{side}×{side} | {tc:.4f} / {tl:.4f} | {tl / tc:.2f} "
              f"| {ec:.4f} / {el:.4f} | {el / ec:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
