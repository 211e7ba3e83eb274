"""P1's yardstick: the classic training pipeline of a paper codebase, in one process.

A torch DataLoader with worker processes decodes nothing (the images are uint8 already) but turns each one
into a PIL image, crops and flips it on the CPU and collates fp32 tensors into pinned memory; the model trains
in fp32, NCHW, with plain SGD steps. The project's figures are divided by this one, measured in the same run.
"""
from __future__ import annotations

import gc

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_core.models import create_model
from unlearn_core.training import sgd

from benchmarks.timing import Timer, summary
from benchmarks.workload import CROP_PAD


class PilImages(torch.utils.data.Dataset):
    """uint8 H×W×C images → PIL → transform, per example, in DataLoader worker processes."""

    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def measure_classic(arch: str, x_chw: np.ndarray, y: np.ndarray, hyp: dict, device: torch.device,
                    num_workers: int, seed: int = 0) -> dict:
    """Plain fp32 training steps fed by a DataLoader with CPU-side PIL RandomCrop(32, 4) + flip.

    Deliberately generous to the baseline: persistent workers (no per-epoch worker start-up) and cuDNN
    autotuning, as the project's pipeline also gets — so the ratio isolates data path, precision and layout.
    """
    import torchvision.transforms as T

    run = hyp["run"]
    bs, warm, n = run["batch"], run["warmup_epochs"], run["repeats"]
    tf = T.Compose([T.RandomCrop(x_chw.shape[-1], padding=CROP_PAD), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = PilImages(np.ascontiguousarray(x_chw.transpose(0, 2, 3, 1)), y, tf)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=True, num_workers=num_workers, pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = create_model(arch, hyp["data"]["classes"], width=hyp["model"]["width"]).to(device)  # fp32, NCHW
    opt = sgd(model, 0.1, 0.9, 5e-4)
    model.train()
    secs = []
    for e in range(warm + n):
        with Timer(device) as t:
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if e >= warm:
            secs.append(t.seconds)
    del loader  # ends the persistent workers
    gc.collect()
    return {"images_per_epoch": len(ds), "epoch_s": summary(secs), "img_s": summary(len(ds) / s for s in secs),
            "num_workers": num_workers, "pin_memory": device.type == "cuda", "precision": "fp32",
            # PyTorch's default lets cuDNN run fp32 convolutions in TF32: recorded, not changed.
            "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
            "augmentation": f"PIL RandomCrop({x_chw.shape[-1]}, padding={CROP_PAD}) + RandomHorizontalFlip, CPU",
            "warmup_epochs": warm}
