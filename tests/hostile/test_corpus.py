"""The hostile-input corpus (issue 16) through the real ``monai-sr enhance`` entry point.

Every case of :data:`cases.CASES` is built into its own folder (``in/`` the input, ``out/`` the folder the
output goes into) and run as its own process, three at a time: a child forked from a server that imported
the CLI once (:mod:`hostile.forkrunner`; the child runs :func:`monai_sr.cli.main`, the console script's
function, with its own stdout/stderr files, environment and exit code), so that 140 cases do not pay
140 imports of torch and MONAI. A refused case must exit 1 with exactly one
stderr line ``monai-sr: error: ...`` naming the culprit file (and tag) and the cause, no traceback, nothing
in ``out/`` (no output, no partial, no lock) and the input tree unchanged (names, bytes, links, modes); an
accepted one must exit 0 with nothing on stderr, its output alone in ``out/``, the note asked for, and the
input unchanged too. The networks run with ``--fast --set self_ensemble=none`` (the pretrained network only).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from helpers import crop_series

from hostile.cases import CASES, Base, Case, lenient_writing

FAST = ("--fast", "--set", "self_ensemble=none", "--quiet")
WORKERS = 3
NOBODY = 65534


@dataclass
class Ran:
    """One case's run: where its input and output were, the process result, the input before and after."""

    input: Path
    out_dir: Path
    output: Path
    returncode: int
    stdout: str
    stderr: str
    before: list
    after: list
    seconds: float


def tree_state(root: Path) -> list:
    """What a run must not change under ``root``: every entry (links not followed) with its type and mode,
    a file's sha256, a link's target."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / entry
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                detail = ""
            out.append((str(p.relative_to(root)), stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, detail))
    return sorted(out)


def _rle_twin(series: Path, folder: Path) -> Path:
    folder.mkdir()
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.compress(pydicom.uid.RLELossless, encoding_plugin="pydicom")
        ds.save_as(folder / f.name)
    return folder


def _request(case: Case, src: Path, output: Path, logs: Path) -> dict:
    """The fork server's request for one case: the CLI's arguments, its stdout/stderr files, environment."""
    env = dict(os.environ)
    uid = None
    if case.as_user and os.geteuid() == 0:  # root reads anything: run this one as nobody
        uid = NOBODY
        env["HOME"] = str(output.parent.parent / "home")  # nobody's caches go there, not beside the output
    return {"args": ["enhance", str(src), str(output), *FAST, *case.args], "env": env, "uid": uid, "timeout": 300,
            "stdout": str(logs / "stdout"), "stderr": str(logs / "stderr")}


class _Runners:
    """One fork server per worker thread (:mod:`hostile.forkrunner`), closed at the end."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.all: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def run(self, request: dict) -> int:
        proc = getattr(self.local, "proc", None)
        if proc is None:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkrunner.py"))],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            self.local.proc = proc
            with self.lock:
                self.all.append(proc)
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        if not answer:
            raise RuntimeError("the fork server of the hostile corpus died")
        return int(json.loads(answer)["code"])

    def close(self) -> None:
        for proc in self.all:
            proc.stdin.close()
            proc.wait(timeout=60)


@dataclass
class Built:
    """One case built: its input, output, input state before the run; or the builder's error."""

    input: Path | None
    out_dir: Path
    output: Path
    before: list
    error: str = ""


def _build(name: str, case: Case, root: Path, base: Base) -> Built:
    folder = root / name
    (folder / "in").mkdir(parents=True)
    out_dir = folder / "out"
    out_dir.mkdir()
    try:
        src = case.build(folder / "in", base)
    except Exception as exc:  # a broken builder fails its own case only
        return Built(None, out_dir, out_dir / case.output, [], f"builder failed: {type(exc).__name__}: {exc}")
    if case.as_user:
        for p in (root, folder, folder / "in"):
            p.chmod(0o755)
        out_dir.chmod(0o777)
        (folder / "home").mkdir(mode=0o777)
        (folder / "home").chmod(0o777)
    return Built(src, out_dir, out_dir / case.output, tree_state(folder / "in"))


def _run(case: Case, built: Built, runners: _Runners) -> Ran:
    if built.input is None:
        return Ran(Path(), built.out_dir, built.output, -1, "", built.error, [], [], 0.0)
    logs = built.out_dir.parent / "logs"
    logs.mkdir()
    if case.as_user:
        logs.chmod(0o777)
    t0 = time.monotonic()
    code = runners.run(_request(case, built.input, built.output, logs))
    stdout, stderr = ((logs / name).read_text(errors="replace") for name in ("stdout", "stderr"))
    if code == -14:  # SIGALRM: the child's own time limit
        stderr = f"timed out after 300 s: {stderr}"
    after = tree_state(built.out_dir.parent / "in")
    return Ran(built.input, built.out_dir, built.output, code, stdout, stderr, built.before, after,
               time.monotonic() - t0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Ran]:
    """Every case built and run (three subprocesses at a time); the case folders live under one temporary
    folder outside pytest's (those are private to root, and the permission cases run as nobody)."""
    sources = tmp_path_factory.mktemp("hostile_sources")
    series = crop_series(sources / "series", style="siemens")
    base = Base(series=series, rle=_rle_twin(series, sources / "rle"))
    root = Path(tempfile.mkdtemp(prefix="monai_sr_hostile_"))
    try:
        only = [n for n in os.environ.get("MONAI_SR_CORPUS_ONLY", "").split(",") if n]  # a few cases, by hand
        with lenient_writing():  # built one after another: pydicom's settings are process-wide
            built = {name: _build(name, case, root, base) for name, case in CASES.items() if not only or name in only}
        runners = _Runners()
        try:
            with ThreadPoolExecutor(WORKERS) as pool:
                futures = {name: pool.submit(_run, CASES[name], b, runners) for name, b in built.items()}
                results = {name: f.result() for name, f in futures.items()}
        finally:
            runners.close()
        if os.environ.get("MONAI_SR_CORPUS_REPORT"):  # a record of every run, to look at by hand
            Path(os.environ["MONAI_SR_CORPUS_REPORT"]).write_text("\n".join(
                f"{name}\t{r.returncode}\t{r.seconds:.1f}s\t{r.stderr.strip()[-400:]!r}\t"
                f"{[line for line in r.stdout.splitlines() if line.startswith('note')]}" for name, r in results.items()))
        yield results
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                p = Path(dirpath) / d
                if not p.is_symlink():
                    p.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 80
    assert sum(c.accepted for c in CASES.values()) >= 10 and sum(not c.accepted for c in CASES.values()) >= 70


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(corpus, name):
    if name not in corpus:
        pytest.skip("not in $MONAI_SR_CORPUS_ONLY")
    case, ran = CASES[name], corpus[name]
    shown = f"exit {ran.returncode}\nstdout: {ran.stdout[-2000:]}\nstderr: {ran.stderr[-3000:]}"
    assert "Traceback" not in ran.stderr, shown
    assert ran.after == ran.before, "the input changed"
    leftovers = sorted(p.name for p in ran.out_dir.iterdir())
    if case.accepted:
        assert ran.returncode == 0, shown
        assert ran.stderr.strip() == "", shown
        assert leftovers == [ran.output.name], leftovers
        if case.note is not None:
            notes = [line for line in ran.stdout.splitlines() if line.startswith("note")]
            assert any(case.note in line for line in notes), shown
        return
    assert ran.returncode == 1, shown
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("monai-sr: error: "), shown
    culprit = str(ran.input / case.culprit) if case.culprit else str(ran.input)
    assert culprit in lines[0], f"the error does not name {culprit}: {lines[0]}"
    for text in case.refuse:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    assert leftovers == [], f"left in the output folder: {leftovers}"
