"""Hooks of the example gallery (named by string in conf.py, so the config stays picklable).

Every example is a command-line script: it takes an output folder as its first argument and
saves its figures there as PNG files. The gallery gives each example a fresh folder, and
shows the PNGs the script wrote there.
"""

import re
import shutil
import tempfile
from pathlib import Path

from sphinx_gallery.scrapers import figure_rst

_OUTPUT_ROOT = Path(tempfile.gettempdir()) / "sklearn_reclag_gallery"
_shown = set()  # PNGs already put on a page

# Extra arguments of the examples that have a quick mode (SKLEARN_RECLAG_GALLERY=quick).
_QUICK_FLAGS = {"plot_dense_memories.py": ["--quick"]}


def _output_dir(src_file):
    return _OUTPUT_ROOT / Path(src_file).stem


def _fresh_output_dir(src_file):
    folder = _output_dir(src_file)
    _shown.difference_update(p for p in _shown if folder in p.parents)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def full_argv(gallery_conf, script_vars):
    """Command-line arguments of an example: its own fresh output folder."""
    return [str(_fresh_output_dir(script_vars["src_file"]))]


def quick_argv(gallery_conf, script_vars):
    """As :func:`full_argv`, plus the example's quick-mode flags where it has them."""
    name = Path(script_vars["src_file"]).name
    return full_argv(gallery_conf, script_vars) + _QUICK_FLAGS.get(name, [])


def written_figures(block, block_vars, gallery_conf):
    """Image scraper: copy the PNGs the example wrote since the last block into the gallery."""
    folder = _output_dir(block_vars["src_file"])
    new = [p for p in folder.rglob("*.png") if p not in _shown]
    new.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    # One full-width figure each (several in one call would be drawn as small thumbnails
    # side by side), titled with the file name the script gave it.
    parts = []
    for png, destination in zip(new, block_vars["image_path_iterator"]):
        shutil.copyfile(png, destination)
        _shown.add(png)
        parts.append(figure_rst([destination], gallery_conf["src_dir"],
                                fig_titles=png.stem.replace("_", " ")))
    return "".join(parts)


def add_not_run_note(rst, script_name, why):
    """``rst`` (an example's page as sphinx-gallery wrote it) with a note under its title
    that the example was not run for this build, ``why``, and how to run it.

    The title is the first line underlined with "=" after sphinx-gallery's
    ``.. _sphx_glr_...:`` label; a page without one is returned unchanged.
    """
    note = ["", ".. note::", "",
            f"   This example was not run when this page was built: {why}, so no output "
            "is shown under its code. The full build shows what it prints and saves; run "
            f"it yourself with ``python examples/{script_name} OUTPUT_DIR``.", ""]
    lines = rst.split("\n")
    label = next((i for i, line in enumerate(lines) if line.startswith(".. _sphx_glr_")), 0)
    for i in range(label, len(lines) - 1):
        if lines[i].strip() and re.fullmatch(r"=+", lines[i + 1].strip()):
            return "\n".join(lines[:i + 2] + note + lines[i + 2:])
    return rst
