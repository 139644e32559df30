"""pydicom's and nibabel's warnings as our own one-line notes.

Both libraries tell about what they tolerate in a file (an invalid VR value, an odd header field) through
Python warnings and their loggers (pydicom's ``warn_and_log`` does both). Left alone, the log record
reaches stderr as a raw line between progress bars and the warning is dropped or printed with a source
line. :func:`library_notes` collects both while it is active and gives one note per distinct message
(``pydicom: Invalid value for VR UI: '1.2.abc' (3 times)``), which :func:`with_library_notes` adds to a
function's result (``enhance``: the summary's ``note`` lines). Warnings from anywhere else pass on to the
filters in force, as before.
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

__all__ = ["LIBRARIES", "library_notes", "with_library_notes"]

LIBRARIES = ("pydicom", "nibabel")
_LOGGERS = ("pydicom", "nibabel", "nibabel.global")
_MAX_CHARS = 240
_stack: list[dict[tuple[str, str], int]] = []
_lock = threading.RLock()


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


def _add(library: str, message: str) -> None:
    with _lock:
        if _stack:
            key = (library, _one_line(message))
            _stack[-1][key] = _stack[-1].get(key, 0) + 1


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            _add(record.name.split(".")[0], record.getMessage())


def _notes(seen: dict[tuple[str, str], int]) -> list[str]:
    return [f"{lib}: {msg}" + (f" (seen {n} times)" if n > 1 else "") for (lib, msg), n in seen.items()]


@contextmanager
def library_notes() -> Iterator[list[str]]:
    """Collect pydicom's and nibabel's warnings and warning log records until the block ends; the list it
    yields is then filled with one note per distinct message. Nested blocks: the innermost collects."""
    seen: dict[tuple[str, str], int] = {}
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
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers[:] = handlers
            lg.propagate = propagate
        with _lock:
            _stack.pop()
        logged = set(seen)  # pydicom's warn_and_log logs and warns the same message: counted once
        for w in caught:
            path = os.path.realpath(w.filename)
            if path.startswith(dirs) or (w.category.__module__ or "").startswith(LIBRARIES):
                library = next((lib for lib in LIBRARIES if f"{os.sep}{lib}{os.sep}" in path),
                               (w.category.__module__ or "pydicom").split(".")[0])
                key = (library, _one_line(w.message))
                if key not in logged:
                    seen[key] = seen.get(key, 0) + 1
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
