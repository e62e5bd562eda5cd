"""The README's usage example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker, language):
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
    return match.group(1)


def test_usage_example_runs(capsys):
    exec(compile(_block_after("usage-example", "python"), "README usage", "exec"), {})
    printed = capsys.readouterr().out
    fpr, auroc = map(float, re.search(r"FPR95 ([0-9.]+)  AUROC ([0-9.]+)", printed).groups())
    assert 0 <= fpr <= 1 and 0.5 < auroc <= 1


def test_ci_runs_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    for marker in ("test-command", "main-command"):
        assert _block_after(marker, "bash").strip()
        assert marker in ci
