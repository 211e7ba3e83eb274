"""Two views of every evaluation: `selection` (validation data only, what a search reads) and `report` (the
paper's test-set metrics, for publishing)."""
from __future__ import annotations

import numpy as np
import pytest

from unlearn_core.metrics import tow, tow_mia
from unlearn_core.references import reference_metrics
from unlearn_core.run import start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

PARAMS = {"epochs": 3, "max_steps": 1, "lr": 0.01}


@pytest.fixture(scope="module")
def spec(shared_store):
    return ExperimentSpec(width=0.125, train_epochs=2, forget_size=30, device="cpu",
                          store=str(shared_store))


def test_a_selection_run_never_touches_the_test_split(spec):
    ws = Workspace(spec)
    ws.test = None  # any evaluation of the test split would fail here
    rows = list(start(spec, "scrub", PARAMS, ws, views=("selection",), evaluate_every_epoch=True).epochs())
    assert rows[-1]["final"] == 1 and all(np.isfinite(r["sel_tow"]) for r in rows)
    assert not any(k in r for r in rows for k in ("tow", "tow_mia", "test_acc", "mia"))


def test_selection_metrics_are_recomputed_from_validation_data(spec):
    ws = Workspace(spec)
    models = []
    rec = start(spec, "scrub", PARAMS, ws, views=("selection", "report"),
                on_request=lambda r, model, req: models.append((model, req))).run()
    model, req = models[0]
    u = ws.evaluate(model, req.forget_ids, views=("selection",))
    r = reference_metrics(ws, req.forget_ids, view="selection")
    assert rec["sel_tow"] == pytest.approx(tow(u, r, held_out="val_acc"), rel=1e-12)
    assert rec["sel_tow_mia"] == pytest.approx(tow_mia(u, r, held_out="val_acc", mia="sel_mia"), rel=1e-12)
    # the report view is the paper's: test accuracy and the test-set MIA
    ur, rr = ws.evaluate(model, req.forget_ids), reference_metrics(ws, req.forget_ids)
    assert rec["tow"] == pytest.approx(tow(ur, rr), rel=1e-12) and rec["test_acc"] == ur["test_acc"]
    assert rec["retrain_selection"]["sel_mia"] == r["sel_mia"] and rec["retrain"]["mia"] == rr["mia"]


def test_the_selection_mia_uses_validation_non_members(spec):
    ws = Workspace(spec)
    ids = np.arange(30)
    model = ws.new_model()
    sel = ws.evaluate(model, ids, views=("selection",))
    ws.val = ws.test  # with the test split as "validation", the selection MIA becomes the report MIA
    assert ws.evaluate(model, ids, views=("selection",))["sel_mia"] == ws.evaluate(model, ids)["mia"]
    assert set(sel) == {"forget_acc", "retain_acc", "val_acc", "sel_mia"}


def test_both_views_in_one_evaluation_equal_each_view_alone(spec):
    ws = Workspace(spec)
    ids, model = np.arange(30), ws.new_model()
    both = ws.evaluate(model, ids, views=("selection", "report"))
    assert both == {**ws.evaluate(model, ids, views=("selection",)), **ws.evaluate(model, ids)}
