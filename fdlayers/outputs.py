"""Output files that never lose data: checked first, written whole, renamed.

Every file the command writes goes to a temporary file beside its target
(same directory, so the same file system) and is renamed into place only
when complete and flushed to disk; on an error, an interrupt or SIGTERM the
temporary file is removed and the old file, if any, is untouched. An
existing file is replaced only with `--force`, and the input never is.
"""

import contextlib
import errno
import os
import tempfile

from fdlayers.datafiles import CommandError


def check_outputs(input_path, outputs, force):
    """Refuse, before any work, every output that cannot or may not be
    written.

    Args:
        input_path: the data file read (or None); no output may be it, by
            any name (the same path, a hard link, a symbolic link either way).
        outputs: `(option, path)` pairs, e.g. `("-o", "data.d1.csv")`.
        force: whether an existing output may be replaced.
    """
    seen = {}
    for option, path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise CommandError(
                f"{seen[key]} and {option} both name {path}; give them "
                "different files")
        seen[key] = option
        if (input_path is not None and os.path.lexists(path)
                and _same_file(path, input_path)):
            raise CommandError(
                f"{option} {path} is the input file {input_path} (the same "
                "file by another name); choose another output name")
        if os.path.isdir(path):
            raise CommandError(f"{option} {path} is a directory")
        if os.path.lexists(path) and not force:
            raise CommandError(
                f"{option} {path} exists; pass --force (-f) to replace it")
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise CommandError(f"cannot write {path}: No such file or directory")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CommandError(f"cannot write {path}: Permission denied "
                               f"(the folder {folder} is not writable)")


def _same_file(a, b):
    """Whether `a` and `b` are one file: `samefile` follows symbolic links
    and compares devices and inodes, which also catches hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # a dangling link: not the input
        return False


@contextlib.contextmanager
def atomic(path, force):
    """Open a temporary binary file beside `path`; on a clean exit, move it
    to `path` in one step.

    Without `force`, a file that appeared at `path` meanwhile (another run
    writing the same output) is not replaced: the move is a hard link,
    which fails where a name exists, and the error says so.
    """
    folder = os.path.dirname(path) or "."
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            # On disk before the rename: otherwise a crash could leave the
            # new name pointing at a file that is still empty.
            os.fsync(file.fileno())
        os.chmod(temporary, _mode(path))
        _move(temporary, path, force)
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_folder(folder)


def _mode(path):
    """An existing file's permissions; else what `open` would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _move(temporary, path, force):
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise CommandError(
            f"{path} appeared while this run was writing it (another "
            "process?); kept it; pass --force (-f) to replace it") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                               errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: a rename, checked just before.
        if os.path.lexists(path):
            raise CommandError(f"{path} exists; pass --force (-f) to replace it")
        os.replace(temporary, path)


def _sync_folder(folder):
    """Make the rename itself durable; not every platform can."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_error(path, error):
    return CommandError(f"cannot write {path}: {error.strerror or error}")
