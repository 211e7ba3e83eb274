"""RUM's named plans (the paper's CIFAR-10 none → finetune → SalUn) and a SalUn stage inside RUM (digits)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_core import references
from unlearn_core.errors import ConfigError
from unlearn_core.forget import mix_groups
from unlearn_core.proxies import memorization
from unlearn_core.rum import PAPER_CIFAR10_PLAN, PLANS, SCRIPT_NEGGRAD_PLUS_PLAN, Rum, parse_plan, plan_dict
from unlearn_core.spec import ExperimentSpec
from unlearn_core.unlearning import Request, make_config
from unlearn_core.workspace import Workspace

SPEC = dict(dataset="digits", width=0.125, train_epochs=6, device="cpu")
PROXY = "confidence"


def test_the_paper_cifar10_plan_by_name():
    cfg = make_config("rum", {"plan": "paper_cifar10"})
    assert cfg.plan == plan_dict(parse_plan(PAPER_CIFAR10_PLAN)) == plan_dict(parse_plan(" paper_cifar10 "))
    (low, _), (mid, ft), (high, sal) = cfg.stages
    assert (low, mid, high) == ("none", "finetune", "salun")
    assert (ft.lr, ft.epochs, sal.lr, sal.epochs, sal.ratio) == (0.1, 10, 0.1, 5, 0.5)   # RUM:main_rum.py
    assert make_config("rum", {"plan": "script_neggrad_plus"}).plan == plan_dict(parse_plan(SCRIPT_NEGGRAD_PLUS_PLAN))
    assert set(PLANS) == {"paper_cifar10", "script_neggrad_plus"}
    with pytest.raises(ConfigError, match="JSON or one of paper_cifar10, script_neggrad_plus"):
        parse_plan("paper_cifar100")


@pytest.fixture(scope="module")
def ws(shared_store):
    w = Workspace(ExperimentSpec(**SPEC, store=str(shared_store)))
    references.original(w)
    return w


def test_a_salun_stage_masks_its_own_starting_model(ws):
    """In none → finetune → salun the SalUn mask is ranked on the fine-tuned model (the stage's start), and the
    weights it freezes stay exactly as the fine-tune stage left them."""
    groups = mix_groups(memorization(ws, PROXY), 30, seed=0)
    plan = [{"algorithm": "none"}, {"algorithm": "finetune", "params": {"epochs": 1, "lr": 0.05}},
            {"algorithm": "salun", "params": {"epochs": 2, "lr": 0.05, "ratio": 0.3}}]
    rum = Rum(references.original(ws)[0], Request(ws, np.concatenate(groups), [], 0, {}, tuple(groups), PROXY),
              make_config("rum", {"plan": plan, "proxy": PROXY}))
    rum.next_epoch()                      # the finetune stage's one epoch
    after_ft = {k: p.detach().clone() for k, p in rum.model.named_parameters()}
    rum.next_epoch()                      # the salun stage's first epoch makes the mask
    sal = rum.inner
    assert type(sal).__name__ == "SalUn" and sal.num_classes == ws.data.num_classes
    assert all(torch.equal(sal.start[k], after_ft[k]) for k in sal.start)
    rum.next_epoch()
    stages = rum.finish()["stages"]
    assert [s["algorithm"] for s in stages] == ["none", "finetune", "salun"] and stages[2]["epochs"] == 2
    for k, p in rum.model.named_parameters():
        m = sal.mask[k]
        assert torch.equal(p.detach()[~m], after_ft[k][~m]), k
