"""The README's examples run as written, and CI runs the README's commands."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker, language):
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
    return match.group(1)


def test_usage_example_runs(capsys):
    namespace = {}
    exec(compile(_block_after("usage-example", "python"), "README usage", "exec"), namespace)
    out = capsys.readouterr().out
    fpr, auroc = map(float, re.search(r"FPR95 ([0-9.]+)  AUROC ([0-9.]+)", out).groups())
    assert 0 <= fpr <= 1 and 0.5 < auroc <= 1
    assert "OOD rows rejected by predict" in out


def test_reproducing_the_papers_lists_the_benchmarks_paper_parameters():
    from sklearn_reclag.benchmark import PAPER_PARAMS

    namespace = {}
    exec(compile(_block_after("usage-papers", "python"), "README papers", "exec"), namespace)
    for name, variable in [("HE", "he"), ("SHE", "she"), ("RecLag", "reclag")]:
        params = namespace[variable].get_params()
        assert {key: params[key] for key in PAPER_PARAMS[name]} == PAPER_PARAMS[name], name


def test_every_python_block_is_tested():
    tested = {"usage-example", "usage-papers"}
    markers = re.findall(r"<!-- ([\w-]+) -->\s*```python", README.read_text())
    assert set(markers) == tested


def test_ci_runs_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    for marker in ("test-command", "slow-test-command", "main-command", "docs-command"):
        assert _block_after(marker, "bash").strip()
        assert marker in ci
    assert "sphinx-build -W" in _block_after("docs-command", "bash")
    # The default run leaves the slow tests out; CI runs them by the README's command.
    assert "-m slow" in _block_after("slow-test-command", "bash")
