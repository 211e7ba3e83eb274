"""What a search refuses before anything of it exists: names that would leave the storage root, an Optuna storage
it cannot open, a bucket that is not there, a storage whose driver is missing, a name another search has claimed.
Each is one line, exit 2, nothing written, no Ray started; the name stays free for a correct command.
"""
from __future__ import annotations

import threading

import fsspec
import pytest
import ray

from tuner import claim as claims
from tuner import search, study

def refused(proc, needle: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not ray.is_initialized()


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".", "x y", "/abs"])
@pytest.mark.parametrize("cli", ["search", "study"])
def test_a_name_is_one_folder_under_the_storage_root(tmp_path, in_process, cli, name):
    root = tmp_path / "root" / "runs"
    root.mkdir(parents=True)
    if cli == "search":
        proc = in_process(search.main, "scrub", "--storage", str(root), "--name", name)
    else:
        proc = in_process(study.main, "--storage", str(root), "--name", name)
    refused(proc, "--name must be one folder name")
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["runs"] and not any(root.iterdir())


@pytest.mark.parametrize("url, needle", [
    ("optuna.db", "expected one of sqlite"),
    ("sqlite:////nonexistent-folder/optuna.db", "/nonexistent-folder is not a writable folder"),
    ("journal://relative/nowhere/x.log", "is not a writable folder"),
    ("postgresql://nobody@127.0.0.1:9/none", "cannot be opened"),
])
def test_a_bad_optuna_storage_is_refused_before_anything_is_written(tmp_path, in_process, url, needle):
    proc = in_process(search.main, "scrub", "--storage", str(tmp_path), "--name", "x", "--optuna-storage", url)
    refused(proc, needle)
    assert not any(tmp_path.iterdir())
    # nothing poisoned: the same name with a storage that works passes every check
    good = search.build_parser().parse_args(["scrub", "--storage", str(tmp_path), "--name", "x",
                                            "--optuna-storage", f"sqlite:///{tmp_path}/shared.db"])
    from tuner.settings import from_args

    assert from_args(good).optuna_url == f"sqlite:///{tmp_path}/shared.db"


def test_resume_refuses_to_move_the_study_instead_of_ignoring_the_flag(tmp_path, in_process):
    exp = tmp_path / "x"
    exp.mkdir()
    from tuner.settings import SearchSettings

    saved = SearchSettings(algorithm="scrub", exp_dir=str(exp), store=str(tmp_path / "artifacts"),
                           optuna_url=f"sqlite:///{exp}/optuna.db")
    (exp / "search.json").write_text(__import__("json").dumps({"settings": saved.to_json()}))
    proc = in_process(search.main, "scrub", "--storage", str(tmp_path), "--name", "x", "--resume",
                      "--optuna-storage", f"sqlite:///{tmp_path}/other.db")
    refused(proc, f"keeps its Optuna study in sqlite:///{exp}/optuna.db")


def test_a_missing_bucket_is_an_error_naming_it_and_is_never_created(s3_server, in_process):
    proc = in_process(search.main, "scrub", "--storage", "s3://no-such-bucket/runs", "--name", "x")
    refused(proc, "bucket 'no-such-bucket' does not exist")
    assert not fsspec.filesystem("s3", skip_instance_cache=True).exists("no-such-bucket")


def test_a_storage_without_its_driver_names_the_extra(in_process):
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    proc = in_process(search.main, "scrub", "--storage", "gs://bucket/runs", "--name", "x")
    refused(proc, "pip install 'unlearn-search[gcs]'")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_of_two_claims_on_one_name_exactly_one_wins(tmp_path, where, request):
    if where == "s3":
        url = f"s3://{request.getfixturevalue('bucket')}/runs/x/search.json"
    else:
        url = f"{tmp_path}/runs/x/search.json"
    won, lost = [], []
    barrier = threading.Barrier(8)

    def try_claim(i: int) -> None:
        barrier.wait()
        try:
            claims.claim(url, f"claimant {i}".encode())
            won.append(i)
        except claims.Taken:
            lost.append(i)

    threads = [threading.Thread(target=try_claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    fs, path = fsspec.core.url_to_fs(url)
    assert fs.cat_file(path) == f"claimant {won[0]}".encode()


def test_a_running_experiment_cannot_be_entered_twice(tmp_path):
    with claims.running(str(tmp_path)):
        with pytest.raises(claims.ConfigError, match="is running in another search"):
            with claims.running(str(tmp_path)):
                pass
    with claims.running(str(tmp_path)):  # released when the search ends
        pass
