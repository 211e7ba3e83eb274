"""The dependency direction (docs/architecture.md): unlearn_core imports neither ray nor optuna; search_spaces
imports neither torch, ray nor unlearn_core. Checked in a fresh interpreter, so nothing imported by other tests
counts."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE = ["unlearn_core", "unlearn_core.run", "unlearn_core.references",
        "unlearn_core.workspace", "unlearn_core.proxies",
        "unlearn_core.rum", "unlearn_core.metrics", "unlearn_core.__main__"]


def imported_after(modules: list[str]) -> set[str]:
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_unlearn_core_never_imports_ray_or_optuna():
    loaded = imported_after(CORE)
    assert "torch" in loaded  # the check itself works: what unlearn_core does use shows up
    assert not {"ray", "optuna"} & loaded


def test_search_spaces_import_only_optuna():
    loaded = imported_after(["search_spaces"])
    assert "optuna" in loaded
    assert not {"ray", "torch", "unlearn_core"} & loaded


def test_no_class_in_unlearn_core_is_over_150_lines():
    """A class that grows past ~150 lines has taken on a second job (`run.Run` keeps only the epoch loop)."""
    import ast

    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((ROOT / "unlearn_core").rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 150]
    assert not long, long


def test_a_cli_prints_a_warning_as_one_line():
    """The CLIs' warnings read `warning: MESSAGE` on one line, not Python's `path:line: Category:` plus the
    source line (e.g. the artifact store's 'artifact ... is corrupt; it will be rebuilt')."""
    import subprocess
    import sys

    code = ("from unlearn_core.errors import one_line_warnings; import warnings; one_line_warnings(); "
            "warnings.warn('artifact /s/x.pt is corrupt\\n(sha256 mismatch); it will be rebuilt')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert err == "warning: artifact /s/x.pt is corrupt (sha256 mismatch); it will be rebuilt\n"
