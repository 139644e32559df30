"""Run many ``monai-sr`` commands without paying the imports each time: a fork server for the corpus.

Started as ``python -m hostile.forkrunner`` (or by path), it imports the CLI and the heavy modules it
loads lazily (torch, MONAI, the pipeline) once, then reads one JSON request per line on stdin:
``{"args": [...], "stdout": PATH, "stderr": PATH, "env": {...}, "uid": null | int, "timeout": s}``. For each it
forks a child that points file descriptors 1 and 2 at the two files, sets the environment (and drops to
``uid`` when asked: the permission cases), runs :func:`monai_sr.cli.main` -- the function the ``monai-sr``
console script calls -- and exits with its return code exactly as the console script does
(``sys.exit(main())``). The child is a fresh process: its exit code, its stderr bytes, its locks and
files are real; only the import time is shared. A child still running after ``timeout`` seconds is killed
by SIGALRM. The answer is one JSON line on stdout: ``{"code": exit code or -signal}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _child(req: dict) -> None:
    """In the forked child: redirect, set the environment, run the CLI, exit with its code."""
    from monai_sr.cli import main

    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.environ.clear()
    os.environ.update(req["env"])
    if req.get("uid") is not None:
        os.setgroups([])
        os.setgid(int(req["uid"]))
        os.setuid(int(req["uid"]))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(req.get("timeout", 300)))
    code = 1
    try:
        code = main(req["args"])  # what `sys.exit(main())` of the console script would pass on
    except SystemExit as exc:  # argparse errors and the like
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:  # an uncaught exception: the traceback on stderr and exit 1, as Python does
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(int(code) & 0xFF)


def serve() -> None:
    """Import once, then answer requests until stdin closes."""
    import monai  # noqa: F401  (what the CLI imports lazily, paid once here)
    import torch  # noqa: F401

    import monai_sr.bundles  # noqa: F401
    import monai_sr.cli  # noqa: F401
    import monai_sr.pipeline  # noqa: F401

    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.write(json.dumps({"code": code}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
