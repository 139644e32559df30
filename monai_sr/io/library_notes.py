"""pydicom's and nibabel's warnings as our own one-line notes.

Both libraries tell about what they tolerate in a file (an invalid VR value, an odd header field) through
Python warnings and their loggers (pydicom's ``warn_and_log`` does both). Left alone, the log record
reaches stderr as a raw line between progress bars and the warning is dropped or printed with a source
line. :func:`library_notes` collects both while it is active and gives one note per distinct message,
naming the file it came from where the code reading it said so with :func:`from_file`
(``pydicom: Invalid value for VR UI: '1.2.abc' (seen 3 times, in 3 files: IM0001.dcm, IM0002.dcm,
IM0003.dcm)``), which :func:`with_library_notes` adds to a function's result (``enhance``: the summary's
``note`` lines). Warnings from anywhere else pass on to the filters in force, as before.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["LIBRARIES", "from_file", "library_notes", "with_library_notes"]

LIBRARIES = ("pydicom", "nibabel")
_LOGGERS = ("pydicom", "nibabel", "nibabel.global")
_MAX_CHARS = 240
_MAX_FILES = 3  # file names shown in one note
_stack: list[dict[tuple[str, str], list]] = []  # per block: (library, message) -> [count, file names]
_lock = threading.RLock()
_current = threading.local()  # .files: the stack of files being read by this thread (from_file)


def _library_dirs() -> tuple[str, ...]:
    import importlib.util

    dirs = []
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += [os.path.join(os.path.realpath(p), "") for p in spec.submodule_search_locations]
    return tuple(dirs)


def _one_line(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    text = re.sub(r"\s*Please see <[^>]*> for allowed values for each VR\.?", "", text)  # pydicom's link
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3] + "..."


@contextmanager
def from_file(path: str | os.PathLike) -> Iterator[None]:
    """What the libraries warn about inside the block comes from the file ``path``: its note names it."""
    files = _current.__dict__.setdefault("files", [])
    files.append(os.path.basename(os.fspath(path)))
    try:
        yield
    finally:
        files.pop()


def _current_file() -> str | None:
    files = getattr(_current, "files", None)
    return files[-1] if files else None


def _add(library: str, message: str, file: str | None) -> None:
    with _lock:
        if _stack:
            entry = _stack[-1].setdefault((library, _one_line(message)), [0, []])
            entry[0] += 1
            if file is not None and file not in entry[1]:
                entry[1].append(file)


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            _add(record.name.split(".")[0], record.getMessage(), _current_file())


def _note(library: str, message: str, count: int, files: list[str]) -> str:
    where = ""
    if len(files) == 1:
        where = f"in {files[0]}"
    elif files:
        shown = ", ".join(files[:_MAX_FILES]) + (", ..." if len(files) > _MAX_FILES else "")
        where = f"in {len(files)} files: {shown}"
    said = ", ".join(part for part in (f"seen {count} times" if count > 1 else "", where) if part)
    return f"{library}: {message}" + (f" ({said})" if said else "")


def _notes(seen: dict[tuple[str, str], list]) -> list[str]:
    return [_note(lib, msg, count, files) for (lib, msg), (count, files) in seen.items()]


@contextmanager
def library_notes() -> Iterator[list[str]]:
    """Collect pydicom's and nibabel's warnings and warning log records until the block ends; the list it
    yields is then filled with one note per distinct message (with the files it came from, where
    :func:`from_file` named them). Nested blocks: the innermost collects."""
    seen: dict[tuple[str, str], list] = {}
    out: list[str] = []
    with _lock:
        outer = not _stack
        _stack.append(seen)
    saved = []
    if outer:
        handler = _Handler()
        for name in _LOGGERS:
            lg = logging.getLogger(name)
            saved.append((lg, lg.handlers[:], lg.propagate))
            lg.handlers[:] = [handler]  # nibabel.global's own StreamHandler too
            lg.propagate = False
    dirs = _library_dirs()
    caught: list[tuple[warnings.WarningMessage, str | None]] = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # the file being read, now
        caught.append((warnings.WarningMessage(message, category, filename, lineno, file, line), _current_file()))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield out
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers[:] = handlers
            lg.propagate = propagate
        with _lock:
            _stack.pop()
        logged = set(seen)  # pydicom's warn_and_log logs and warns the same message: counted once
        for w, file in caught:
            path = os.path.realpath(w.filename)
            if path.startswith(dirs) or (w.category.__module__ or "").startswith(LIBRARIES):
                library = next((lib for lib in LIBRARIES if f"{os.sep}{lib}{os.sep}" in path),
                               (w.category.__module__ or "pydicom").split(".")[0])
                key = (library, _one_line(w.message))
                if key not in logged:
                    entry = seen.setdefault(key, [0, []])
                    entry[0] += 1
                    if file is not None and file not in entry[1]:
                        entry[1].append(file)
            else:  # not ours to judge: through the filters in force outside the block
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        out += _notes(seen)


def with_library_notes(attach: Callable[[object, list[str]], None]) -> Callable:
    """Decorator: run the function inside :func:`library_notes` and hand its result and the notes to
    ``attach(result, notes)`` (which adds them where the result keeps its notes)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with library_notes() as notes:
                result = fn(*args, **kwargs)
            if notes:
                attach(result, notes)
            return result

        return wrapper

    return decorate
