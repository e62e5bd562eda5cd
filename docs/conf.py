"""Sphinx configuration of the sklearn-reclag documentation.

Build (from the repository root)::

    pip install -c constraints.txt -e ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

The example gallery runs every script of examples/ while the site builds. Set
``SKLEARN_RECLAG_GALLERY=quick`` to run the examples in their quick mode (CI does), or pass
``-D plot_gallery=0`` to show their code without running them.
"""

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))  # the gallery helpers, named by string below

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
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False  # the autosummary templates list the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- Benchmarks: the files the benchmark scripts wrote, copied in at build time ---------------
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the results files start their sections at any level


def _copy_benchmark_results():
    """Copy benchmarks/RESULTS.md and benchmarks/results/*.png into docs/benchmarks/.

    RESULTS.md is assembled from the result files, and those name their figures relative
    to benchmarks/results/: both go into one folder, so the links resolve. Nothing is
    retyped: the page shows exactly what the scripts wrote.
    """
    target = DOCS / "benchmarks" / "generated"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copyfile(ROOT / "benchmarks" / "RESULTS.md", target / "RESULTS.md")
    figures = sorted((ROOT / "benchmarks" / "results").rglob("*.png"))
    lines = []
    for png in figures:
        relative = png.relative_to(ROOT / "benchmarks" / "results")
        flat = str(relative).replace(os.sep, "__")
        shutil.copyfile(png, target / flat)
        if png.parent.name == "results":
            shutil.copyfile(png, target / png.name)
        lines += [f"``benchmarks/results/{relative.as_posix()}``", "",
                  f".. image:: {flat}", "   :width: 90%", ""]
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
_QUICK = os.environ.get("SKLEARN_RECLAG_GALLERY", "full") == "quick"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/",  # run every example, not only plot_*.py
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
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-reclag {release}"
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_copy_source = False
