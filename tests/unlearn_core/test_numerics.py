"""Precision and memory format are settings of the experiment, not device checks (issue #24), and the GPU's
default, bf16 autocast + channels_last, agrees with fp32 on the CPU.

The bf16 path runs here on the CPU, on a width-0.0625 ResNet-18 and a few hundred digits: a tiny training from
one initial model, one short run of every registered algorithm from one fp32-trained original, and an
evaluation, each against the same computation in fp32 + contiguous. They agree within:

* `ACC_POINTS` percentage points on every accuracy (measured: at most 0.45, one retain example of 224);
* `MIA_GAP` on the MIA score, a 0-1 fraction (measured: at most 0.031, one forget example of 32);
* `PROB_GAP` on any softmax probability of one model (measured: 0.012);
* `LOSS_RATIO` relative on each epoch's training loss (measured: at most 1.8 %).

bf16 on a CPU without bf16 instructions is emulated (≈4-7× slower than fp32), hence the sizes.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from unlearn_core import references
from unlearn_core.data import load_dataset
from unlearn_core.dataset import ArraySplit
from unlearn_core.errors import ConfigError
from unlearn_core.metrics import accuracy, predict_probs
from unlearn_core.numerics import Numerics
from unlearn_core.proxies import memorization
from unlearn_core.run import method
from unlearn_core.spec import ExperimentSpec
from unlearn_core.training import train
from unlearn_core.unlearning import ALGORITHMS, Request
from unlearn_core.workspace import Workspace

ACC_POINTS, MIA_GAP, PROB_GAP, LOSS_RATIO = 3.0, 0.1, 0.05, 0.05
WIDTH, TRAIN_EPOCHS, N_TRAIN, N_VAL, N_TEST, N_FORGET = 0.0625, 20, 256, 64, 128, 32
BF16_CL = {"precision": "bf16", "memory_format": "channels_last"}

# One short run of each registered algorithm (batches of 128: few steps, each a real update).
FT1 = {"epochs": 1, "lr": 0.01, "retain_batch_size": 128}
NG1 = {"epochs": 1, "lr": 0.01, "forget_batch_size": 32, "retain_batch_size": 128}
SHORT = {"scrub": {"epochs": 1, "max_steps": 1, "lr": 0.01, "forget_batch_size": 32, "retain_batch_size": 128},
         "neggrad_plus": NG1, "neggrad": {"epochs": 1, "lr": 1e-3, "forget_batch_size": 32}, "finetune": FT1,
         "l1_sparse": FT1, "random_label": {"epochs": 1, "lr": 0.01, "batch_size": 128},
         "salun": {"epochs": 1, "lr": 0.01, "batch_size": 128},
         "rum": {"plan": [{"algorithm": "none", "params": {}}, {"algorithm": "finetune", "params": FT1},
                          {"algorithm": "none", "params": {}}], "proxy": "confidence"}}


def _subset(split: ArraySplit, pick: np.ndarray) -> ArraySplit:
    return ArraySplit(split.x[pick], split.y[pick])


@pytest.fixture(scope="module")
def data():
    """A seeded few hundred of digits' train / val / test examples (every class in each)."""
    d = load_dataset("digits")
    rng = np.random.default_rng(0)
    tr, va, te = (np.sort(rng.choice(len(s), n, replace=False))
                  for s, n in ((d.train, N_TRAIN), (d.val, N_VAL), (d.test, N_TEST)))
    return dataclasses.replace(d, train=_subset(d.train, tr), val=_subset(d.val, va), test=_subset(d.test, te),
                               train_index=d.train_index[tr], val_index=d.val_index[va],
                               train_source_index=d.train_source_index[tr])


@pytest.fixture(scope="module")
def workspaces(data, tmp_path_factory) -> dict:
    """fp32 + contiguous (the reference) and bf16 + channels_last workspaces of one experiment, one store."""
    spec = ExperimentSpec(width=WIDTH, train_epochs=TRAIN_EPOCHS, device="cpu", memory_format="contiguous",
                          store=str(tmp_path_factory.mktemp("store")))
    return {"fp32": Workspace(spec, data), "bf16": Workspace(dataclasses.replace(spec, **BF16_CL), data)}


@pytest.fixture(scope="module")
def original(workspaces):
    """The fp32 original's weights and its proxy scores: every algorithm starts from them in both numerics."""
    ws = workspaces["fp32"]
    model, _ = references.original(ws)
    acc = accuracy(predict_probs(model, ws.test.x), ws.test.y)
    assert acc > 70, f"the original is too weak to compare unlearning on: {acc:.1f} %"
    return {k: v.clone() for k, v in model.state_dict().items()}, memorization(ws, "confidence")


class Seen:
    """What a model's convolutions gave in every forward pass (hooks, so every path counts): whether each output
    was channels_last (digits have one channel, so inputs cannot tell the layouts apart; outputs can) and its
    dtype (bf16 under bf16 autocast)."""

    def __init__(self, model: torch.nn.Module):
        self.layouts, self.dtypes = set(), set()
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(self._record)

    def _record(self, module, args, out) -> None:
        self.layouts.add("channels_last" if out.is_contiguous(memory_format=torch.channels_last)
                         and not out.is_contiguous() else "contiguous")
        self.dtypes.add(out.dtype)

    def saw(self, numerics: Numerics) -> bool:
        dtype = torch.bfloat16 if numerics.precision == "bf16" else torch.float32
        return self.layouts == {numerics.memory_format} and self.dtypes == {dtype}


# --- the settings --------------------------------------------------------------------------------------------------
def test_the_defaults_follow_the_device_and_settings_override_them():
    assert Numerics.resolve("cpu") == Numerics("cpu", "fp32", "channels_last")
    assert Numerics.resolve("cuda:1") == Numerics("cuda", "bf16", "channels_last")
    assert Numerics.resolve("cuda", "fp32", "contiguous") == Numerics("cuda", "fp32", "contiguous")
    assert Numerics.resolve("cpu", **BF16_CL) == Numerics("cpu", "bf16", "channels_last")


@pytest.mark.parametrize("bad", [{"precision": "fp16"}, {"memory_format": "nhwc"}])
def test_an_unknown_precision_or_memory_format_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="valid: ") as e:
        ExperimentSpec(**bad)
    assert list(bad.values())[0] in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_takes_both_and_refuses_others(in_process):
    from unlearn_core.__main__ import build_parser, main
    from unlearn_core.cli_args import spec_from_args

    args = build_parser().parse_args(["run", "--algorithm", "scrub", "--precision", "bf16",
                                      "--memory-format", "channels_last"])
    spec = spec_from_args(args)
    assert (spec.precision, spec.memory_format) == ("bf16", "channels_last")
    res = in_process(main, "run", "--algorithm", "scrub", "--precision", "fp16")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "fp16" in res.stderr


def test_input_is_unit_floats_in_the_memory_format():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(2, 3, 1, 1)
    f = Numerics("cpu", "fp32", "contiguous").input(x)
    assert f.dtype == torch.float32 and f.shape == x.shape and f.is_contiguous()
    torch.testing.assert_close(f, x.double().div(255).float())
    g = Numerics("cpu", **BF16_CL).input(x)
    assert g.is_contiguous(memory_format=torch.channels_last) and not g.is_contiguous()
    torch.testing.assert_close(g, f)
    assert x[0, 0, 15, 15].item() == 255  # the input is left as it was


def test_a_workspace_lays_out_its_models_and_batches_and_keys_its_models_by_precision(workspaces):
    ws16, ws32 = workspaces["bf16"], workspaces["fp32"]
    conv = next(m for m in ws16.new_model().modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert ws16.train.numerics == ws16.numerics == ws16.train.subset(np.arange(4)).numerics
    assert ws16.identity() != ws32.identity()  # a bf16 original is another model
    with pytest.raises(ConfigError, match="precision='bf16' there, 'fp32' in the spec"):
        ws16.check_spec(ws32.spec)


# --- bf16 + channels_last agrees with fp32 -------------------------------------------------------------------------
def test_a_tiny_training_agrees(workspaces):
    """Two epochs from scratch (12 steps: too few for a model whose accuracy means anything, so the losses are
    compared, epoch by epoch)."""
    done = {}
    for name, ws in workspaces.items():
        model = ws.new_model()  # the same initial weights: the seed fixes them
        seen, losses = Seen(model), []
        train(model, ws.train, dataclasses.replace(ws.recipe, epochs=2, batch_size=32, lr=0.1), seed=0,
              pad=ws.data.crop_pad, on_epoch=lambda e, s, got=losses: got.append(s["loss"]))
        done[name] = losses, seen
    (loss32, seen32), (loss16, seen16) = done["fp32"], done["bf16"]
    assert seen32.saw(workspaces["fp32"].numerics) and seen16.saw(workspaces["bf16"].numerics)
    assert loss16 != loss32 and all(abs(a - b) <= LOSS_RATIO * b for a, b in zip(loss16, loss32)), (loss16, loss32)


def test_an_evaluation_agrees(workspaces, original):
    state, _ = original
    ids = np.arange(N_FORGET)
    got = {}
    for name, ws in workspaces.items():
        model = ws.load_model(state)
        seen = Seen(model)
        got[name] = predict_probs(model, ws.test.x, numerics=ws.numerics), ws.evaluate(model, ids), seen
    (p32, m32, seen32), (p16, m16, seen16) = got["fp32"], got["bf16"]
    assert seen32.saw(workspaces["fp32"].numerics) and seen16.saw(workspaces["bf16"].numerics)
    assert p16.dtype == torch.float32  # the softmax stays fp32: the MIA's features need its resolution
    assert 0 < (p16 - p32).abs().max().item() <= PROB_GAP
    _assert_agree(m16, m32)


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_one_run_of_every_algorithm_agrees(workspaces, original, algorithm):
    state, scores = original
    ids = np.arange(N_FORGET)
    got = {}
    for name, ws in workspaces.items():
        m = method(algorithm, SHORT[algorithm], ws.spec)
        model = ws.load_model(state)
        seen = Seen(model)
        unl = m.unlearner.for_request(model, Request(ws, ids, [], 0, {"confidence": scores}), m.cfg)
        while unl.epoch < unl.epochs:
            unl.next_epoch()
        got[name] = ws.evaluate(unl.model, ids), seen, unl.model.state_dict()
    (m32, seen32, w32), (m16, seen16, w16) = got["fp32"], got["bf16"]
    assert seen32.saw(workspaces["fp32"].numerics)
    assert seen16.saw(workspaces["bf16"].numerics), ("some pass ignored the settings", seen16.layouts, seen16.dtypes)
    assert any(not torch.equal(w32[k], w16[k]) for k in w32), "bf16 unlearning left the same weights as fp32"
    _assert_agree(m16, m32)


def _assert_agree(m16: dict, m32: dict) -> None:
    for k in ("forget_acc", "retain_acc", "val_acc", "test_acc"):
        assert abs(m16[k] - m32[k]) <= ACC_POINTS, (k, m16[k], m32[k])
    assert abs(m16["mia"] - m32["mia"]) <= MIA_GAP, (m16["mia"], m32["mia"])
