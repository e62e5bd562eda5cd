"""The README's examples run as written, and CI runs the README's commands."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker, language):
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
    return match.group(1)


def test_usage_examples_run_in_order(capsys):
    namespace = {}
    exec(compile(_block_after("usage-example", "python"), "README usage", "exec"), namespace)
    fpr, auroc = map(float, re.search(
        r"FPR95 ([0-9.]+)  AUROC ([0-9.]+)", capsys.readouterr().out).groups())
    assert 0 <= fpr <= 1 and 0.5 < auroc <= 1
    # The later blocks continue from the first one's variables, as a reader would run them.
    exec(compile(_block_after("usage-reclag", "python"), "README RecLag", "exec"), namespace)
    assert namespace["reclag"].memories_.shape == (5, 10, 64)
    rejected = namespace["reclag"].predict(namespace["X_ood"][:5]) == -1
    assert not namespace["retrieved"][rejected].any()
    exec(compile(_block_after("usage-grid-search", "python"), "README search", "exec"), namespace)
    assert set(namespace["search"].best_params_) == {"beta"}
    # The threshold search starts from the beta chosen on FPR95.
    threshold = namespace["threshold"]
    assert set(threshold.best_params_) == {"contamination"}
    assert threshold.best_estimator_.beta == namespace["search"].best_params_["beta"]


def test_every_python_block_is_tested():
    tested = {"usage-example", "usage-reclag", "usage-grid-search"}
    markers = re.findall(r"<!-- ([\w-]+) -->\s*```python", README.read_text())
    assert set(markers) == tested


def test_ci_runs_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    for marker in ("test-command", "main-command"):
        assert _block_after(marker, "bash").strip()
        assert marker in ci
