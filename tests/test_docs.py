"""The API reference of the documentation site lists every public object.

docs/api.rst names the objects its autosummary tables document; a public estimator or
function added to the package without a line there would have no page.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api.rst"

# Helpers that modules import for their own use, not to offer them.
INTERNAL_MODULES = {"sklearn_reclag._backend"}

# Modules whose public objects the reference documents, under these names.
MODULES = ["sklearn_reclag", "sklearn_reclag.metrics", "sklearn_reclag.model_selection",
           "sklearn_reclag.datasets", "sklearn_reclag.plotting", "sklearn_reclag.distributed",
           "sklearn_reclag.calibration", "sklearn_reclag.auto"]


def _existing(module_names):
    """The modules of this checkout (sklearn_reclag.calibration may not exist yet)."""
    package = Path(importlib.import_module("sklearn_reclag").__file__).parent
    return [name for name in module_names
            if name == "sklearn_reclag"
            or (package / (name.split(".")[1] + ".py")).exists()]


def _public_names(module_name):
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        names = set(module.__all__)
    else:
        names = {name for name, value in vars(module).items()
                 if not name.startswith("_") and not inspect.ismodule(value)
                 and getattr(value, "__module__", module_name).startswith("sklearn_reclag")
                 and getattr(value, "__module__", module_name) not in INTERNAL_MODULES}
    return names - {"__version__"}


def _documented():
    """(module, name) of every autosummary entry, with the currentmodule it is under."""
    documented, module = set(), None
    for line in API.read_text().splitlines():
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = match.group(1)
        elif re.match(r"   [A-Za-z_]\w*$", line) and module:
            documented.add((module, line.strip()))
    return documented


def test_every_public_object_has_a_page():
    documented = _documented()
    documented_names = {name for _, name in documented}
    missing = []
    for module_name in _existing(MODULES):
        for name in sorted(_public_names(module_name)):
            # Re-exports (OOD_LABEL, the threshold scorers in model_selection) are
            # documented once, where they are defined or first listed.
            if (module_name, name) not in documented and name not in documented_names:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"not in docs/api.rst: {missing}"


def test_every_entry_exists():
    for module_name, name in _documented():
        assert hasattr(importlib.import_module(module_name), name), f"{module_name}.{name}"


# --------------------------------------------------------------------- the gallery
DOCS = API.parent
EXAMPLES = DOCS.parent / "examples"
_THUMBNAIL = re.compile(r'^# sphinx_gallery_thumbnail_path = "([^"]+)"$', re.MULTILINE)


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_has_a_thumbnail_of_its_own(script):
    """An example that saves no PNG names a drawn thumbnail that exists (issue 23 item 9:
    the gallery showed sphinx-gallery's placeholder for them); one that saves figures
    gets its first figure and names none."""
    text = script.read_text()
    named = _THUMBNAIL.findall(text)
    if ".png" in _THUMBNAIL.sub("", text):
        assert not named
    else:
        assert len(named) == 1, "add # sphinx_gallery_thumbnail_path (docs/_thumbnails.py)"
        assert (DOCS / named[0]).is_file(), f"{named[0]}: run python docs/_thumbnails.py"


def test_pages_of_examples_not_run_say_so_under_their_title():
    """The quick build leaves some examples unrun: their pages get a note under the
    title that says why no output is shown and how to run them."""
    pytest.importorskip("sphinx_gallery")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_gallery_helpers",
                                                  DOCS / "_gallery_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    page = "\n".join([
        ".. note::", "    :class: sphx-glr-download-link-note", "",
        ".. _sphx_glr_auto_examples_demo.py:", "", "A demo", "======", "",
        "Its introduction.", ""])
    noted = helpers.add_not_run_note(page, "demo.py", "the quick build skips it").split("\n")
    title = noted.index("A demo")
    assert noted[title + 3] == ".. note::"
    note = noted[title + 5]
    assert "not run when this page was built: the quick build skips it" in note
    assert "``python examples/demo.py OUTPUT_DIR``" in note
    assert noted[title + 7:] == ["", "Its introduction.", ""]
