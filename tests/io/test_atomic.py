"""io/atomic.py: reservations (one writer per target, across processes), publishing that never replaces
without overwrite, stale partials of dead owners cleaned, kill -9 at the pause points of real processes.

The processes here run the library only (no model), so each takes well under a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from monai_sr.errors import OutputError
from monai_sr.io import atomic
from monai_sr.io.atomic import (
    PAUSE_ENV,
    atomic_output,
    check_not_inside,
    make_output_folder,
    release_output,
    reserve_output,
)

# A writer process: reserve TARGET, write "CONTENT" slowly into it through atomic_output (a file, or a
# folder with two files), optionally with overwrite.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from monai_sr.errors import MonaiSRError
    from monai_sr.io.atomic import atomic_output, pause_point, reserve_output
    target, content, is_dir, overwrite = sys.argv[1], sys.argv[2], sys.argv[3] == "dir", sys.argv[4] == "1"
    try:
        reserve_output(target, overwrite=overwrite)
        with atomic_output(target, is_dir=is_dir, overwrite=overwrite) as tmp:
            if is_dir:
                (tmp / "a.txt").write_text(content)
                pause_point("writing")
                (tmp / "b.txt").write_text(content)
            else:
                tmp.write_text(content[:1])
                pause_point("writing")
                tmp.write_text(content)
    except MonaiSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


def _writer(target: Path, content: str, *, is_dir: bool = False, overwrite: bool = False, pause: str | None = None,
            flag: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    if pause:
        env[PAUSE_ENV] = f"{pause}:{flag}"
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), content, "dir" if is_dir else "file", "1" if overwrite else "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the writer ended ({proc.returncode}) before its pause: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("the writer never reached its pause")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: its PID is no longer alive


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _content(path: Path) -> str:
    return (path / "a.txt").read_text() + (path / "b.txt").read_text() if path.is_dir() else path.read_text()


# --- in one process ---------------------------------------------------------------------------------------


def test_file_published_with_nothing_beside_it(tmp_path):
    target = tmp_path / "out.nii.gz"
    with atomic_output(target, is_dir=False) as tmp:
        assert tmp.name == "out.nii.gz" and tmp.parent.name == f".out.nii.gz.monai-sr-{os.getpid()}.partial"
        assert (tmp_path / ".out.nii.gz.monai-sr.lock").read_text().strip() == str(os.getpid())
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_error_leaves_nothing_and_frees_the_target(tmp_path):
    target = tmp_path / "series"
    with pytest.raises(RuntimeError), atomic_output(target, is_dir=True) as tmp:
        (tmp / "x.dcm").write_text("half")
        raise RuntimeError("boom")
    assert not target.exists() and _leftovers(tmp_path) == []
    with atomic_output(target, is_dir=True) as tmp:  # free again
        (tmp / "x.dcm").write_text("whole")
    assert (target / "x.dcm").read_text() == "whole"


@pytest.mark.parametrize("is_dir", [False, True])
def test_never_replaces_without_overwrite_even_when_it_appears_while_writing(tmp_path, is_dir):
    target = tmp_path / ("out" if is_dir else "out.nii")
    with pytest.raises(OutputError, match="appeared while this run was writing"):
        with atomic_output(target, is_dir=is_dir) as tmp:
            (tmp / "a.txt").write_text("new") if is_dir else tmp.write_text("new")
            if is_dir:  # the earlier output, published meanwhile by someone who ignored the reservation
                target.mkdir()
                (target / "a.txt").write_text("earlier")
            else:
                target.write_text("earlier")
    assert (target / "a.txt" if is_dir else target).read_text() == "earlier"
    assert _leftovers(tmp_path) == []


def test_empty_folder_appearing_is_not_replaced_either(tmp_path):
    """os.rename would silently replace an empty folder; the publish must not."""
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="appeared"), atomic_output(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("new")
        target.mkdir()
    assert target.is_dir() and not any(target.iterdir())


@pytest.mark.parametrize("is_dir", [False, True])
def test_overwrite_replaces_only_when_complete(tmp_path, is_dir):
    target = tmp_path / ("out" if is_dir else "out.nii")
    if is_dir:
        target.mkdir()
        (target / "old.txt").write_text("old")
    else:
        target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target, is_dir=is_dir, overwrite=True) as tmp:
        raise RuntimeError("failed half way")
    assert (target / "old.txt" if is_dir else target).read_text() == "old"
    with atomic_output(target, is_dir=is_dir, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new") if is_dir else tmp.write_text("new")
    if is_dir:
        assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    else:
        assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_fallback_publishing_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_renameat2", None)
    for is_dir in (False, True):
        target = tmp_path / ("d" if is_dir else "f")
        for overwrite, text in ((False, "one"), (True, "two")):
            with atomic_output(target, is_dir=is_dir, overwrite=overwrite) as tmp:
                (tmp / "a.txt").write_text(text) if is_dir else tmp.write_text(text)
        assert (target / "a.txt" if is_dir else target).read_text() == "two"
        with pytest.raises(OutputError, match="exists already"), atomic_output(target, is_dir=is_dir) as tmp:
            pass
    assert _leftovers(tmp_path) == []


def test_reserve_refuses_existing_missing_and_unwritable(tmp_path, monkeypatch):
    (tmp_path / "exists.nii").write_text("x")
    with pytest.raises(OutputError, match="exists already"):
        reserve_output(tmp_path / "exists.nii")
    with pytest.raises(OutputError, match="does not exist") as err:
        reserve_output(tmp_path / "missing" / "out.nii")
    assert err.value.path == str(tmp_path / "missing")
    with pytest.raises(OutputError, match="is not a folder"):
        reserve_output(tmp_path / "exists.nii" / "out.nii")
    with pytest.raises(OutputError, match="not a folder reference"):
        reserve_output(tmp_path / "..")
    locked = tmp_path / "ro"
    locked.mkdir()

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic.os, "open", refuse)  # as a read-only or foreign folder answers
    with pytest.raises(OutputError, match=r"cannot write into this folder \(Permission denied\)") as err:
        reserve_output(locked / "out.nii")
    assert err.value.path == str(locked)


def test_reserve_is_idempotent_in_a_process_and_release_frees(tmp_path):
    target = tmp_path / "out.nii"
    first = reserve_output(target)
    assert reserve_output(target) is first
    release_output(target)
    assert _leftovers(tmp_path) == []
    with reserve_output(target):
        assert _leftovers(tmp_path) == [".out.nii.monai-sr.lock"]
    assert _leftovers(tmp_path) == []


def test_check_not_inside(tmp_path):
    src = tmp_path / "series"
    src.mkdir()
    (src / "IM1").write_text("x")
    for bad in (src, src / "out", src / "sub" / "out.nii.gz"):
        with pytest.raises(OutputError) as err:
            check_not_inside(bad, src)
        assert str(src) in str(err.value) and str(bad) in str(err.value)
    check_not_inside(tmp_path / "out", src)
    link = tmp_path / "alias"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="inside the input folder"):
        check_not_inside(link / "out", src)  # through a symlink too
    with pytest.raises(OutputError, match="holds the input"):
        check_not_inside(tmp_path, src / "IM1")  # an existing output replaced (overwrite) that holds the input
    check_not_inside(tmp_path, src / "IM1", replaced=False)
    dicomdir = tmp_path / "cd" / "DICOMDIR"
    dicomdir.parent.mkdir()
    dicomdir.write_text("x")
    with pytest.raises(OutputError, match="inside the input folder"):
        check_not_inside(dicomdir.parent / "out", dicomdir)


def test_make_output_folder(tmp_path):
    assert make_output_folder(tmp_path / "new") is True
    assert make_output_folder(tmp_path / "new") is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="a file has this name"):
        make_output_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="does not exist"):
        make_output_folder(tmp_path / "no" / "new")


def test_stale_partials_and_locks_of_dead_owners_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a PID that is not alive any more
    (tmp_path / f".out.nii.monai-sr-{pid}.partial").mkdir()
    (tmp_path / f".out.nii.monai-sr-{pid}.partial" / "out.nii").write_text("half")
    (tmp_path / ".out.nii.abcd1234.partial").mkdir()  # left by an older version (tempfile.mkdtemp)
    (tmp_path / f".other.nii.monai-sr-{pid}.partial").mkdir()  # another target's, dead owner
    (tmp_path / f".busy.nii.monai-sr-{os.getpid()}.partial").mkdir()  # a live owner's: kept
    (tmp_path / ".free.nii.monai-sr.lock").write_text(f"{pid}\n")  # an unlocked lock of a dead owner
    (tmp_path / ".mine.lock").write_text("not ours")  # not our name pattern: kept
    with atomic_output(tmp_path / "out.nii", is_dir=False) as tmp:
        tmp.write_text("whole")
    assert _leftovers(tmp_path) == [f".busy.nii.monai-sr-{os.getpid()}.partial", ".mine.lock"]


# --- real processes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_dir", [False, True])
def test_two_concurrent_writers_one_target(tmp_path, is_dir):
    target, flag = tmp_path / "out", tmp_path / "flag"
    first = _writer(target, "first", is_dir=is_dir, pause="writing", flag=flag)
    _wait_for(flag, first)
    second = _writer(target, "second", is_dir=is_dir)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert f"{target}: output in use by another monai-sr run (pid {first.pid})" in err
    assert not target.exists()
    _kill(first)
    assert not target.exists()  # killed while writing: nothing published
    third = _writer(target, "third", is_dir=is_dir)
    assert third.wait(timeout=120) == 0, third.stderr.read()
    assert _content(target) == ("thirdthird" if is_dir else "third")
    assert _leftovers(tmp_path) == [], "the stale partial and lock of the killed writer are cleaned"


@pytest.mark.parametrize("moment", ["reserved", "writing", "publish"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_kill_9_never_leaves_a_partial_or_replaced_target(tmp_path, moment, overwrite):
    target, flag = tmp_path / "out", tmp_path / "flag"
    if overwrite:
        target.mkdir()
        (target / "a.txt").write_text("old")
        (target / "b.txt").write_text("old")
    proc = _writer(target, "new", is_dir=True, overwrite=overwrite, pause=moment, flag=flag)
    _wait_for(flag, proc)
    _kill(proc)
    if overwrite:
        assert _content(target) == "oldold", "the earlier output is untouched"
    else:
        assert not target.exists()
    assert any(n.endswith(".monai-sr.lock") for n in _leftovers(tmp_path))
    if moment == "publish":
        assert (tmp_path / f".out.monai-sr-{proc.pid}.partial" / "out" / "b.txt").read_text() == "new"
    nxt = _writer(target, "next", is_dir=True, overwrite=overwrite)
    assert nxt.wait(timeout=120) == 0, nxt.stderr.read()
    assert _content(target) == "nextnext"
    assert _leftovers(tmp_path) == []


def test_sequential_writers_without_overwrite_never_replace(tmp_path):
    target = tmp_path / "out.nii"
    assert _writer(target, "first").wait(timeout=120) == 0
    second = _writer(target, "second")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1 and "output exists already" in err
    assert target.read_text() == "first"


def test_racing_writers_never_both_succeed(tmp_path):
    """Six processes started at once on one target, no pauses: exactly one publishes, and what is there
    is one complete output."""
    target = tmp_path / "out"
    procs = [_writer(target, f"w{i}", is_dir=True) for i in range(6)]
    codes = [p.wait(timeout=180) for p in procs]
    assert codes.count(0) == 1, codes
    winner = procs[codes.index(0)]
    i = procs.index(winner)
    assert _content(target) == f"w{i}w{i}"
    for p, code in zip(procs, codes):
        if code:
            err = p.stderr.read()
            assert "in use by another monai-sr run" in err or "exists already" in err, err
    assert _leftovers(tmp_path) == []
