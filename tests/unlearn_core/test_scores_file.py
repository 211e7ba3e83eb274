"""`--proxy scores:FILE`: true memorization scores from a .npy / .npz in the official training order (issue #13
part 5) — the mapping to the training split's ids, the mix's centre 0.5, the cache key, and the bad inputs,
each one ConfigError line."""
from __future__ import annotations

import os

import numpy as np
import pytest

from unlearn_core.__main__ import build_parser, main
from unlearn_core.errors import ConfigError
from unlearn_core.forget import mix_groups
from unlearn_core.proxies import check_proxy, memorization, proxy_center, proxy_label, read_scores_file
from unlearn_core.run import check, start
from unlearn_core.spec import ExperimentSpec
from unlearn_core.workspace import Workspace

N_DIGITS = 1797  # digits' "official training set": every bundled digit, in scikit-learn's load order
NONE = {"algorithm": "none", "params": {}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scores")
    index = np.arange(N_DIGITS, dtype=np.float64)
    np.save(d / "index.npy", index)
    np.savez(d / "named.npz", labels=np.zeros(N_DIGITS), memorization=index / (N_DIGITS - 1))
    np.savez(d / "first.npz", index * 2)  # one unnamed array: arr_0
    np.save(d / "short.npy", np.zeros(100))
    nan = index.copy()
    nan[7] = np.nan
    np.save(d / "nan.npy", nan)
    return d


@pytest.fixture(scope="module")
def ws(shared_store):
    spec = ExperimentSpec(width=0.125, train_epochs=2, device="cpu", store=str(shared_store))
    return Workspace(spec)


def test_official_order_maps_to_the_split_ids(ws, files):
    scores, info = memorization(ws, f"scores:{files / 'index.npy'}", return_info=True)
    assert len(scores) == len(ws.train)
    # the score of train id i is its official index, and that index is the same image in the bundled set
    assert np.array_equal(scores, ws.data.train_source_index)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None].repeat(2, axis=2).repeat(2, axis=3)
    src = scores.astype(np.int64)
    assert np.array_equal(x[src], ws.data.train.x) and np.array_equal(bunch.target[src], ws.data.train.y)
    assert info["model"] == "file" and not info["follows_model"] and "index.npy" in info["source"]
    assert info["sha256"] == read_scores_file(str(files / "index.npy"))[2]


def test_npz_named_array_or_first_array(ws, files):
    named = memorization(ws, f"scores:{files / 'named.npz'}")
    np.testing.assert_allclose(named, ws.data.train_source_index / (N_DIGITS - 1))
    assert read_scores_file(str(files / "named.npz"))[1] == "memorization"
    assert np.array_equal(memorization(ws, f"scores:{files / 'first.npz'}"), 2 * ws.data.train_source_index)


def test_a_changed_file_is_a_new_artifact(ws, tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros(N_DIGITS))
    _, a = memorization(ws, f"scores:{path}", return_info=True)
    _, again = memorization(ws, f"scores:{path}", return_info=True)
    np.save(path, np.ones(N_DIGITS))
    os.utime(path, ns=(1, 1))  # a new stamp, whatever the file system's clock resolution
    s, b = memorization(ws, f"scores:{path}", return_info=True)
    assert a["built"] and not again["built"] and b["built"] and a["sha256"] != b["sha256"] and s.min() == 1


def test_a_mix_by_scores_centres_mid_on_one_half(ws, files):
    name = f"scores:{files / 'named.npz'}"
    assert proxy_center(name) == 0.5 and proxy_center("confidence") is None
    spec = ExperimentSpec(width=0.125, train_epochs=2, device="cpu", store=ws.spec.store, forget="mix",
                          forget_size=30, proxy=name)
    seen = []
    rec = start(spec, "rum", {"plan": [NONE, NONE, NONE]}, ws,
                on_request=lambda r, model, req: seen.append(req)).run()
    scores = memorization(ws, name)
    expected = mix_groups(scores, 30, seed=0, center=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(seen[0].groups, expected))
    assert np.abs(scores[expected[1]] - 0.5).max() < 0.01  # mid: nearest 0.5, not the median
    assert rec["requests"][0]["proxies"][name]["model"] == "file"


def _one_line_error(name, data=None) -> str:
    with pytest.raises(ConfigError) as e:
        check_proxy(name, data)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_files_are_one_config_error_line(ws, files):
    assert "No such file" in _one_line_error("scores:/nope.npy")
    msg = _one_line_error(f"scores:{files / 'short.npy'}", ws.data)
    assert "has 100 scores, expected 1797" in msg and "official" in msg
    assert "1 of its 1797 scores are NaN or inf (first at index 7)" in _one_line_error(f"scores:{files / 'nan.npy'}")
    assert "needs a file" in _one_line_error("scores:")
    # the run driver refuses them before anything trains: the name and file in check, the length in start
    for bad, where in (("/nope.npy", check), ("nan.npy", check), ("short.npy", start)):
        path = bad if bad.startswith("/") else str(files / bad)
        spec = ExperimentSpec(width=0.125, train_epochs=2, device="cpu", store=ws.spec.store, forget="mix",
                              forget_size=30, proxy=f"scores:{path}")
        with pytest.raises(ConfigError, match="scores file"):
            where(spec, "scrub", {}) if where is check else start(spec, "scrub", {}, ws)
        with pytest.raises(ConfigError, match="scores file"):
            memorization(ws, f"scores:{path}")


def test_cli_accepts_scores_files_and_refuses_bad_ones(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    args = build_parser().parse_args(["run", "--algorithm", "rum", "--proxy", "scores:index.npy"])
    assert args.proxy == f"scores:{files / 'index.npy'}"  # absolute: Ray workers run elsewhere
    assert build_parser().parse_args(["run", "--algorithm", "rum", "--proxy", "bin_acc_current"]).proxy == \
        "bin_acc_current"
    with pytest.raises(SystemExit) as e:
        main(["run", "--algorithm", "scrub", "--proxy", "scores:/nope.npy"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "/nope.npy" in err[0]


def test_search_and_study_flags_accept_scores_files(files, monkeypatch):
    from tuner.search import build_parser as search_parser
    from tuner.study import PRESETS, Cell, build_parser as study_parser, plan_cells

    monkeypatch.chdir(files)
    name = f"scores:{files / 'index.npy'}"
    assert search_parser().parse_args(["rum", "--proxy", "scores:index.npy"]).proxy == name
    cells, settings = plan_cells(study_parser().parse_args(["--proxies", "confidence", "scores:index.npy"]),
                                 PRESETS["smoke"])
    assert settings["proxies"] == ["confidence", name] and {c.proxy for c in cells} == {"confidence", name}
    with pytest.raises(ConfigError, match="scores file /nope.npy"):
        plan_cells(study_parser().parse_args(["--proxies", "scores:/nope.npy"]), PRESETS["smoke"])
    cell = Cell("digits", "resnet18", 0, "scrub", True, name)
    assert "/" not in cell.name("sequential") and proxy_label(name).startswith("scores-index-")
