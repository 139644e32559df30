"""Never a partial output, never a lost one: reserve the target, write beside it, publish by a rename.

The life of an output ``T`` (a file or a folder) in the folder ``P``:

1. **Reserve** (:func:`reserve_output`; :func:`monai_sr.pipeline.preflight` calls it, before any model
   is loaded or voxel read): ``P/.T.monai-sr.lock`` is created and locked with ``flock`` (exclusive,
   non-blocking) and holds the owner's PID. A second writer finds it locked and is refused with an
   :class:`OutputError` "in use by another monai-sr run (pid N)". The kernel drops the lock when its
   owner dies (kill -9 too), so a lock file left behind blocks nobody: the next run takes it over and
   removes it. Creating the lock file also proves ``P`` writable, in preflight.
2. **Clean**: holding the reservation, every partial of ``T`` (``P/.T.monai-sr-<pid>.partial``; no other
   live writer can hold ``T``) is removed; so are partials in ``P`` of other targets whose owner PID is
   not alive and whose lock is free, and free lock files.
3. **Write** into ``P/.T.monai-sr-<pid>.partial/T`` (:func:`atomic_output`).
4. **Publish** by ``renameat2(RENAME_NOREPLACE)``: an existing ``T`` is never replaced unless
   ``overwrite``, whatever appeared there meanwhile; with ``overwrite``, ``RENAME_EXCHANGE`` swaps old
   and new in one step and the old one is removed afterwards. Where renameat2 is missing: a file is
   published with ``os.link`` (never replaces) or ``os.replace``; a folder by a check then a rename
   under the reservation (an overwritten folder is first moved into the partial folder as ``T.old``,
   and put back by the next run if the process died in between).
5. **Release**: the partial folder and the lock file are removed (also at exit for a reservation
   that was never used, e.g. when the model failed to load).

A kill -9 at any moment leaves ``T`` as it was or complete and new, never partial; the partial
folder it leaves is removed by the next run writing ``T`` (or anything else in ``P``).

Test hook (for the tests only; no effect without the variable): with
``MONAI_SR_TEST_PAUSE=<moment>:<flag file>`` in the environment, the process writes its PID into the
flag file and sleeps forever when it reaches ``<moment>``: ``reserved`` (the reservation taken),
``reading`` (a block of input slices read, :meth:`~monai_sr.io.volume_source.VolumeSource.read`),
``inference`` (a plane inferred, before it goes to the writer, :func:`~monai_sr.inference.streaming.stream_planes`),
``writing`` (the first slice written by a NIfTI or DICOM writer) or ``publish`` (the output complete,
compressed, just before the rename), so that a test can kill it exactly there.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import functools
import inspect
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from monai_sr.errors import OutputError

try:  # POSIX; elsewhere an exclusive create with a PID check stands in for the lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_output",
    "check_output_free",
    "check_not_inside",
    "make_output_folder",
    "reserve_output",
    "release_output",
    "release_output_on_error",
    "OutputReservation",
    "pause_point",
    "PAUSE_ENV",
]

PAUSE_ENV = "MONAI_SR_TEST_PAUSE"
_TAG = "monai-sr"
_PARTIAL = re.compile(rf"^\.(?P<name>.+)\.{_TAG}-(?P<pid>\d+)\.partial$")
_LEGACY_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.partial$")  # tempfile.mkdtemp of older versions
_LOCK = re.compile(rf"^\.(?P<name>.+)\.{_TAG}\.lock$")


def pause_point(moment: str) -> None:
    """The test hook of the module docstring: sleep forever at ``moment`` when ``$MONAI_SR_TEST_PAUSE``
    names it (after writing this process's PID into the flag file it names)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    at, _, flag = spec.partition(":")
    if at != moment:
        return
    if flag:
        tmp = f"{flag}.{os.getpid()}.tmp"
        Path(tmp).write_text(str(os.getpid()))
        os.replace(tmp, flag)
    while True:  # pragma: no cover - ended by the test's kill -9
        time.sleep(3600)


def _partial_name(name: str, pid: int | None = None) -> str:
    return f".{name}.{_TAG}-{os.getpid() if pid is None else pid}.partial"


def _lock_name(name: str) -> str:
    return f".{name}.{_TAG}.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


def _split(target: str | os.PathLike) -> tuple[Path, Path, str]:
    """``(target, its folder, its name)``; OutputError for a name that cannot be a new output."""
    target = Path(target)
    name = target.name
    if name in ("", ".", "..") or os.path.basename(os.path.normpath(os.fspath(target))) in ("", ".", ".."):
        raise OutputError("the output must be a new file or folder name, not a folder reference", path=target)
    return target, target.parent, name


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def check_output_free(target: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputError` when ``target`` exists (and ``overwrite`` is off), its folder is missing
    or is not writable. A check only; :func:`reserve_output` also keeps others away."""
    target, parent, _ = _split(target)
    if _exists(target) and not overwrite:
        raise OutputError("output exists already (pass overwrite to replace it)", path=target)
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"the folder to write into {why}", path=parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("cannot write into this folder (permission denied)", path=parent)
    return target


def check_not_inside(output: str | os.PathLike, input_path: str | os.PathLike, *, replaced: bool = True) -> None:
    """OutputError when ``output`` is the input, lies inside the input folder (a DICOMDIR's folder counts
    as the input), or, when ``output`` would be ``replaced`` (an existing one, with overwrite), holds the
    input: the input is never modified and never written into. Both paths are named."""
    out = Path(output).parent.resolve() / Path(output).name
    src = Path(input_path).resolve()
    roots = [src]
    if src.is_file() and src.name.upper() == "DICOMDIR":
        roots.append(src.parent)
    for root in roots:
        if out == root:
            raise OutputError(f"output is the input {input_path}; the input is never modified", path=output)
        if root.is_dir() and out.is_relative_to(root):
            raise OutputError(f"output lies inside the input folder {input_path}; the input is never written into",
                              path=output)
    if replaced and _exists(out) and src.is_relative_to(out):
        raise OutputError(f"output holds the input {input_path}; the input is never modified", path=output)


def make_output_folder(folder: str | os.PathLike) -> bool:
    """Create ``folder`` (its parent must exist); True when it was created. OutputError with the cause
    when it cannot be (missing parent, not a folder, permission, read-only file system)."""
    folder = Path(folder)
    if folder.is_dir():
        return False
    if not folder.parent.is_dir():
        raise OutputError("the folder to write into does not exist", path=folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        raise OutputError("output must be a folder, and a file has this name", path=folder) from None
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror or exc})", path=folder) from None
    return True


# --- reservations -------------------------------------------------------------------------------------

_HELD: dict[Path, OutputReservation] = {}
_HELD_LOCK = threading.Lock()


def _key(target: Path) -> Path:
    return target.parent.resolve() / target.name


class _InUse(Exception):
    def __init__(self, pid: str) -> None:
        self.pid = pid


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip()[:20] or "?"
    except OSError:
        return "?"


def _take_lock(lock_path: Path) -> int:
    """An fd holding ``lock_path`` locked (exclusive); :class:`_InUse` when a live process holds it.
    OSError (permission, read-only, missing folder) passes through."""
    for _ in range(100):
        if fcntl is None:  # pragma: no cover - non-POSIX: exclusive create, a dead owner's file taken over
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = _read_pid(lock_path)
                if pid.isdigit() and not _pid_alive(int(pid)):
                    _remove(lock_path)
                    continue
                raise _InUse(pid) from None
        else:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _InUse(_read_pid(lock_path)) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the file in place
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    raise OutputError("could not lock the output (its lock file keeps changing)", path=lock_path)  # pragma: no cover


def _drop_lock(lock_path: Path, fd: int) -> None:
    try:
        os.unlink(lock_path)  # ours: we hold it, and only a holder removes it
    except OSError:
        pass
    os.close(fd)


class OutputReservation:
    """This process's hold on an output path (see the module docstring); :func:`reserve_output` makes it.
    ``release()`` (or leaving a ``with`` block) gives it up; :func:`atomic_output` does so once it has
    published or abandoned the output."""

    def __init__(self, target: Path, key: Path, lock_path: Path, fd: int) -> None:
        self.target, self.key, self.lock_path, self._fd = target, key, lock_path, fd
        self.active = False  # an atomic_output is writing it

    @property
    def partial(self) -> Path:
        """This process's temporary folder for the target."""
        return self.lock_path.parent / _partial_name(self.target.name)

    def release(self) -> None:
        with _HELD_LOCK:
            if _HELD.get(self.key) is self:
                del _HELD[self.key]
            fd, self._fd = self._fd, None
        if fd is None:
            return
        _remove(self.partial)
        _drop_lock(self.lock_path, fd)

    def __enter__(self) -> OutputReservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _restore_or_remove(partial: Path, name: str, target: Path) -> None:
    """Remove a stale partial folder; first put back an overwritten old output that a dead process had
    moved aside (folder publishing without renameat2) when nothing took its place."""
    old = partial / f"{name}.old"
    if old.exists() and not _exists(target):
        try:
            os.rename(old, target)
        except OSError:
            pass
    _remove(partial)


def _clean_stale(parent: Path, name: str) -> None:
    """Holding ``name``'s reservation: remove its partials (all stale), and partials / lock files of other
    targets in ``parent`` whose owners are gone (dead PID and free lock)."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    others: dict[str, list[Path]] = {}
    for entry in entries:
        m = _PARTIAL.match(entry.name) or _LEGACY_PARTIAL.match(entry.name)
        if m and m["name"] == name:
            _restore_or_remove(Path(entry.path), name, parent / name)
        elif m and "pid" in m.groupdict() and not _pid_alive(int(m["pid"])):
            others.setdefault(m["name"], []).append(Path(entry.path))
        elif (lm := _LOCK.match(entry.name)) and lm["name"] != name:
            others.setdefault(lm["name"], [])
    for other, partials in others.items():
        if _key(parent / other) in _HELD:
            continue
        lock_path = parent / _lock_name(other)
        try:
            fd = _take_lock(lock_path)
        except (_InUse, OSError, OutputError):
            continue
        try:
            for p in partials:
                _restore_or_remove(p, other, parent / other)
        finally:
            _drop_lock(lock_path, fd)


def reserve_output(target: str | os.PathLike, *, overwrite: bool = False) -> OutputReservation:
    """Reserve ``target`` for this process (idempotent within a process) and clean stale partials.

    Raises :class:`OutputError` when ``target`` exists and ``overwrite`` is off, when another live
    process holds it ("in use"), or when its folder is missing or not writable. The reservation holds
    until :func:`atomic_output` has published (or abandoned) the output, :meth:`OutputReservation.release`
    or :func:`release_output`, or the process ends.
    """
    target, parent, name = _split(target)
    if _exists(target) and not overwrite:
        raise OutputError("output exists already (pass overwrite to replace it)", path=target)
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"the folder to write into {why}", path=parent)
    key = _key(target)
    with _HELD_LOCK:
        held = _HELD.get(key)
    if held is not None:
        return held
    lock_path = parent / _lock_name(name)
    try:
        fd = _take_lock(lock_path)
    except _InUse as busy:
        raise OutputError(
            f"output in use by another monai-sr run (pid {busy.pid}); wait for it to finish or choose another "
            "output", path=target) from None
    except OSError as exc:
        raise OutputError(f"cannot write into this folder ({exc.strerror or exc})", path=parent) from None
    if _exists(target) and not overwrite:  # published by another run between the check and the lock
        _drop_lock(lock_path, fd)
        raise OutputError("output exists already (pass overwrite to replace it)", path=target)
    res = OutputReservation(target, key, lock_path, fd)
    with _HELD_LOCK:
        _HELD[key] = res
    _clean_stale(parent, name)
    pause_point("reserved")
    return res


def release_output(target: str | os.PathLike) -> None:
    """Give up this process's reservation of ``target``, if it holds one (its partial is removed)."""
    try:
        key = _key(Path(target))
    except OSError:  # pragma: no cover
        return
    with _HELD_LOCK:
        held = _HELD.get(key)
    if held is not None:
        held.release()


F = TypeVar("F", bound=Callable)


def release_output_on_error(param: str) -> Callable[[F], F]:
    """Decorator: when the function raises, release this process's reservation of its argument
    ``param`` (the output path), so that a failed run does not keep the target until the process ends."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException:
                try:
                    target = sig.bind(*args, **kwargs).arguments.get(param)
                except TypeError:
                    target = None
                if target is not None:
                    release_output(target)
                raise

        return inner  # type: ignore[return-value]

    return wrap


@atexit.register
def _release_all() -> None:
    for res in list(_HELD.values()):
        res.release()


# --- publishing -----------------------------------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_renameat2 = None
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
except (AttributeError, OSError):  # pragma: no cover - not glibc >= 2.28
    _renameat2 = None


class _Unsupported(Exception):
    pass


def _rename2(src: Path, dst: Path, flags: int) -> None:
    """renameat2; OSError as the system reports it, :class:`_Unsupported` where it cannot be used."""
    if _renameat2 is None:
        raise _Unsupported
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise _Unsupported
        raise OSError(err, os.strerror(err), str(dst))


def _publish_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` onto ``target``; FileExistsError when anything is there (it is never replaced)."""
    try:
        _rename2(tmp, target, _RENAME_NOREPLACE)
        return
    except _Unsupported:
        pass
    if tmp.is_dir():
        if _exists(target):  # under our reservation: only a process that ignores it could race here
            raise FileExistsError(errno.EEXIST, "exists", str(target))
        os.rename(tmp, target)
    else:
        os.link(tmp, target)  # never replaces
        os.unlink(tmp)


def _publish_over(tmp: Path, target: Path, partial: Path) -> None:
    """Move ``tmp`` onto ``target``, replacing what is there in one step where the system allows."""
    try:
        _rename2(tmp, target, _RENAME_EXCHANGE)  # the old output is now at tmp, removed with the partial
        return
    except FileNotFoundError:
        return _publish_new(tmp, target)
    except _Unsupported:
        pass
    if not _exists(target):
        return _publish_new(tmp, target)
    if not tmp.is_dir() and not target.is_dir():
        os.replace(tmp, target)
        return
    old = partial / f"{target.name}.old"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise


@contextmanager
def atomic_output(target: str | os.PathLike, *, is_dir: bool, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (in ``.<name>.monai-sr-<pid>.partial/``); on success
    publish it as ``target``.

    ``target`` is reserved first (:func:`reserve_output`; an existing reservation of this process is
    used). On any exception the temporary folder is removed and ``target`` is left as it was. An
    existing ``target`` (also one that appeared while writing) is replaced only with ``overwrite``,
    and only once the new output is complete. The reservation is released at the end.
    """
    res = reserve_output(target, overwrite=overwrite)
    target = Path(target)
    try:
        if res.active:
            raise OutputError("output in use by another writer in this process", path=target)
        res.active = True
        partial = res.partial
        _remove(partial)
        try:
            partial.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot write beside the output ({exc.strerror or exc})", path=partial) from None
        tmp = partial / target.name
        if is_dir:
            tmp.mkdir()
        yield tmp
        pause_point("publish")
        try:
            if overwrite:
                _publish_over(tmp, target, partial)
            else:
                _publish_new(tmp, target)
        except FileExistsError:
            raise OutputError("output appeared while this run was writing; it was kept and the new output "
                              "discarded (pass overwrite to replace it)", path=target) from None
        except OSError as exc:
            raise OutputError(f"cannot publish the output ({exc.strerror or exc}); nothing was changed",
                              path=target) from None
    finally:
        res.active = False
        res.release()  # removes the partial folder (and an old output swapped into it)
