"""Figures of the command line: checked before any work, saved atomically.

matplotlib is optional (the `plot` extra): the library never imports it,
and the command only where a figure is drawn.
"""

import os

from fdlayers.datafiles import CommandError


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def check_path(path):
    """Fail early, before any work: without matplotlib, or for a format
    matplotlib cannot write."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(
            "--plot needs matplotlib, which is not installed "
            "(pip install 'fdlayers[plot]' or pip install matplotlib)") from None
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in formats:
        raise CommandError(
            f"--plot {path}: matplotlib cannot write {extension!r}; use one "
            f"of .{', .'.join(sorted(formats))}")


def save(figure, path, force):
    """Save `figure` to `path` in the format its extension names, through
    a temporary file renamed into place (fdlayers.outputs.atomic)."""
    from fdlayers import outputs

    extension = os.path.splitext(path)[1].lower().lstrip(".")
    with outputs.atomic(path, force) as file:
        figure.savefig(file, format=extension, dpi=110)
