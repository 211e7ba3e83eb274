"""Random Label: forget labels uniform over the dataset's classes, fresh each epoch; retain labels true.

Checked on a linear model of 3×3 images (7 classes, so a default of 10 would show) against what the algorithm
promises, not against its own code: the labels it trained on are read from the unlearner after each epoch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from unlearn_core.errors import ConfigError
from unlearn_core.random_label import RandomLabel
from unlearn_core.spec import ExperimentSpec
from unlearn_core.unlearning import Request, make_config
from unlearn_core.workspace import Workspace

CLASSES = 7


def _unlearner(forget, retain, model, *, seed=0, **params):
    cfg = make_config("random_label", {"epochs": 3, "lr": 0.01, "batch_size": 512, **params})
    return RandomLabel(model, forget, retain, cfg, seed=seed, num_classes=CLASSES)


def test_labels_are_uniform_over_the_dataset_classes_and_redrawn_each_epoch(tiny):
    forget, retain, model = tiny(7000, 100, CLASSES)
    unl = _unlearner(forget, retain, model)
    epochs = []
    for _ in range(3):
        unl.next_epoch()
        epochs.append(unl.forget_labels.clone())
    for labels in epochs:
        counts = torch.bincount(labels, minlength=CLASSES)
        assert len(counts) == CLASSES and labels.min() >= 0  # only the dataset's 7 classes, every one of them
        assert stats.chisquare(counts.numpy()).pvalue > 1e-3  # uniform (7000 draws: ~1000 per class)
    for a, b in zip(epochs, epochs[1:]):
        # independent uniform draws agree on ~1/7 of the examples; the same labels again would agree on all
        assert 0.10 < (a == b).float().mean().item() < 0.19
    # the true label is not excluded: about 1/7 of the draws hit it
    assert 0.10 < (epochs[0] == forget.y).float().mean().item() < 0.19


def test_retain_keeps_its_labels_and_each_epoch_sees_every_example_once(tiny):
    forget, retain, model = tiny(50, 200, CLASSES)
    unl = _unlearner(forget, retain, model, batch_size=32)
    data = unl.relabelled()
    assert torch.equal(data.y[len(forget):], retain.y) and torch.equal(data.y[:len(forget)], unl.forget_labels)
    seen = torch.cat([ids for _, _, ids in data.batches(32, unl.gen_retain)])
    assert sorted(seen.tolist()) == sorted(torch.cat([forget.ids, retain.ids]).tolist())


def test_labels_follow_the_seed(tiny):
    forget, retain, model = tiny(500, 50, CLASSES)
    a, b, c = (_unlearner(forget, retain, model, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.relabelled().y, b.relabelled().y)
    assert not torch.equal(a.relabelled().y, c.relabelled().y)


def test_the_number_of_classes_comes_from_the_dataset(tiny, tmp_path):
    ws = Workspace(ExperimentSpec(dataset="digits", width=0.125, device="cpu", store=str(tmp_path)))
    cfg = make_config("random_label", {"epochs": 1})
    unl = RandomLabel.for_request(ws.new_model(), Request(ws, np.arange(30), [], 0), cfg)
    assert unl.num_classes == ws.data.num_classes
    forget, retain, model = tiny(10, 10, CLASSES)
    assert RandomLabel(model, forget, retain, cfg, seed=0).num_classes == CLASSES  # else the model's head
    with pytest.raises(ConfigError, match="number of classes"):
        RandomLabel(torch.nn.Linear(9, 7), forget, retain, cfg, seed=0)  # neither: refused, never a default


@pytest.mark.parametrize("params, message", [({"lr": 0.0}, "lr must be > 0"), ({"batch_size": 0}, "batch_size"),
                                             ({"epochs": -1}, "epochs"), ({"ratio": 0.5}, "unknown hyperparameter")])
def test_config_ranges(params, message):
    with pytest.raises(ConfigError, match=message):
        make_config("random_label", params)
