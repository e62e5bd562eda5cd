"""Sphinx configuration of the sklearn-reclag documentation.

Build (from the repository root)::

    pip install -c constraints.txt -e ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

The example gallery runs every script of examples/ while the site builds (12-19 minutes
on 2 shared CPU cores). ``SKLEARN_RECLAG_GALLERY=quick`` runs the quick ones only, in their
quick mode, and shows the code of the others (CI does: its test suite runs every example
anyway); ``-D plot_gallery=0`` shows the code of all without running any.
"""

import os
import re
import runpy
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))  # the gallery helpers, named by string below

import _gallery_helpers  # noqa: E402
import sklearn_reclag  # noqa: E402

project = "sklearn-reclag"
author = "sklearn-reclag developers"
copyright = "sklearn-reclag developers"
version = release = sklearn_reclag.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_screenshots", "benchmarks/generated/figures.rst"]
templates_path = ["_templates"]
html_static_path = ["_static"]
default_role = "literal"
nitpicky = False

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
# The class template adds the inherited members (fit_predict, get_params...), but not
# scikit-learn's metadata-routing and set_output plumbing: their docstrings point at pages
# of scikit-learn's own site.
autodoc_default_options = {
    "members": True,
    "exclude-members": ", ".join([
        "get_metadata_routing", "set_output", "set_fit_request", "set_score_request",
        "set_predict_request", "set_transform_request", "set_predict_proba_request",
        "set_decision_function_request", "set_score_samples_request",
        "set_partial_fit_request",
    ]),
}
autodoc_typehints = "none"
numpydoc_show_class_members = False  # the autosummary templates list the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    """Keep ``(n_samples, n_features_in_)`` in a docstring's shapes as plain text.

    reStructuredText reads ``word_`` as a link to a target named "word"; the shapes of the
    docstrings name fitted attributes (``n_features_in_``), as numpydoc docstrings do.
    Only this package's docstrings are touched, only inside parentheses, and never inside
    inline literals.
    """
    if not name.startswith("sklearn_reclag"):
        return

    def escape(group):
        return re.sub(r"(?<=\w)_(?=[,) +])", r"\\_", group.group(0))

    for i, line in enumerate(lines):
        parts = re.split(r"(``.*?``|`[^`]*`)", line)  # odd indices: literals and roles
        lines[i] = "".join(part if k % 2 else re.sub(r"\([^()]*\)", escape, part)
                           for k, part in enumerate(parts))


def setup(app):
    # Before numpydoc (priority 500), which turns the sections into reST.
    app.connect("autodoc-process-docstring", _escape_trailing_underscores, priority=400)
    app.connect("source-read", _not_run_note)

# -- Benchmarks: the files the benchmark scripts wrote, copied in at build time ---------------
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the results files start their sections at any level


def _copy_benchmark_results():
    """Copy the benchmark scripts' result files into docs/benchmarks/generated/.

    RESULTS.md is assembled (by benchmarks/collect_results.py) from some of the files of
    benchmarks/results/; the others get a page each. Their figures are named relative to
    benchmarks/results/, so every PNG goes into the same folder and the links resolve.
    Nothing is retyped: the pages show exactly what the scripts wrote.
    """
    results = ROOT / "benchmarks" / "results"
    target = DOCS / "benchmarks" / "generated"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copyfile(ROOT / "benchmarks" / "RESULTS.md", target / "RESULTS.md")
    collected = runpy.run_path(str(ROOT / "benchmarks" / "collect_results.py"))["SECTIONS"]
    in_results = {name for name, *_ in collected}
    others = sorted(p.name for p in results.glob("*.md") if p.name not in in_results)
    for name in others:
        shutil.copyfile(results / name, target / name)
    (target / "others.rst").write_text("\n".join([
        "Other result files", "==================", "",
        "The files of ``benchmarks/results/`` that ``RESULTS.md`` does not collect.", "",
        ".. toctree::", "   :maxdepth: 1", "",
        *(f"   {Path(name).stem}" for name in others), ""]))
    lines = []
    for png in sorted(results.rglob("*.png")):
        relative = png.relative_to(results)
        flat = relative.as_posix().replace("/", "__")
        shutil.copyfile(png, target / flat)
        # Included from benchmarks/figures.rst: a path from the source root.
        lines += [f"``benchmarks/results/{relative.as_posix()}``", "",
                  f".. image:: /benchmarks/generated/{flat}", "   :width: 90%", ""]
    (target / "figures.rst").write_text("\n".join(lines) + "\n")


_copy_benchmark_results()


# -- Reproducing the papers: the parameter sets, written from benchmark.PAPER_PARAMS ------------
def _write_paper_params():
    """One code block per paper configuration, from the dict the benchmarks use."""
    from sklearn_reclag.benchmark import PAPER_PARAMS

    classes = {"HE": "HopfieldEnergyDetector", "SHE": "HopfieldEnergyDetector",
               "RecLag": "RecLagDetector"}
    lines = []
    for name, params in PAPER_PARAMS.items():
        arguments = ",\n".join(f"    {key}={value!r}" for key, value in params.items())
        lines += [f".. code-block:: python", f"   :caption: {name}", "",
                  *(f"   {line}" for line in
                    f"{classes[name]}(\n{arguments},\n)".splitlines()), ""]
    (DOCS / "user_guide" / "paper_params.inc").write_text("\n".join(lines))


_write_paper_params()

# -- Example gallery -------------------------------------------------------------------------
_GALLERY_MODE = os.environ.get("SKLEARN_RECLAG_GALLERY", "full")
if _GALLERY_MODE not in ("full", "quick"):
    raise ValueError(f"SKLEARN_RECLAG_GALLERY must be 'full' or 'quick'; got {_GALLERY_MODE!r}.")
_QUICK = _GALLERY_MODE == "quick"
# The examples that run in the quick mode: those that take about a minute or less on 2 CPU
# cores (plot_dense_memories.py with its --quick flag). The others are shown as code.
_QUICK_EXAMPLES = r"/(auto_detector|feature_extraction_pipeline|persistence|plot_\w+)\.py$"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": _QUICK_EXAMPLES if _QUICK else r"/",  # r"/": all, not only plot_*
    "ignore_pattern": r"__init__\.py",
    # The scripts save their figures as files (they run from the command line too): show
    # the PNGs they wrote, in the order they wrote them.
    "image_scrapers": ("_gallery_helpers.written_figures",),
    "reset_argv": "_gallery_helpers.quick_argv" if _QUICK else "_gallery_helpers.full_argv",
    "reset_modules": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("sklearn_reclag",),
    "inspect_global_variables": False,
    "show_signature": False,
    # The examples that save no figure name a drawn thumbnail (docs/_thumbnails.py) in a
    # "# sphinx_gallery_thumbnail_path = ..." comment, which the pages need not show.
    "remove_config_comments": True,
}


def _not_run_note(app, docname, source):
    """Say at the top of an example's page that the quick build did not run it.

    In the quick build (and with ``-D plot_gallery=0``) the examples not run show their
    code without any output; without a word the page reads as if the script printed
    nothing.
    """
    if not docname.startswith("auto_examples/") or docname.endswith("/index"):
        return
    script = ROOT / "examples" / (docname.split("/", 1)[1] + ".py")
    plot_gallery = str(app.config.sphinx_gallery_conf.get("plot_gallery", True))
    ran_all = plot_gallery.lower() not in ("false", "0")
    if not script.exists() or (ran_all and (not _QUICK or re.search(
            _QUICK_EXAMPLES, "/" + script.name))):
        return
    why = ("the quick build of this site (``SKLEARN_RECLAG_GALLERY=quick``) runs only the "
           "examples that take about a minute or less" if ran_all else
           "this build of the site ran no example (``-D plot_gallery=0``)")
    source[0] = _gallery_helpers.add_not_run_note(source[0], script.name, why)


# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-reclag {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
}
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_copy_source = False
