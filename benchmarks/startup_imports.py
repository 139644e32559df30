"""What installed-but-unused packages cost every ``monai-sr`` start-up: ``import monai`` with and without them.

MONAI's ``import monai`` loads its submodules eagerly, and they ``optional_import`` whatever is installed:
pytorch-ignite (``monai.engines``, ``monai.utils.enums``), which pulls ``torch.distributed``'s FSDP and
tensor modules and sympy. Inference never uses ignite, so since this benchmark it is the ``train`` extra
(setup.cfg) rather than a requirement. Each round runs fresh interpreters, in turn: ``import monai`` as
installed, and the same with the named packages hidden (a ``sys.meta_path`` finder that refuses them, so
MONAI's ``optional_import`` sees them missing, as in an environment without them). Prints each run's
seconds, the medians and their difference.

    .venv/bin/python -m benchmarks.startup_imports [--rounds 5] [--hide ignite]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

_PROBE = """
import importlib.abc, sys, time
hidden = {hidden!r}
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(name)
if hidden:
    sys.meta_path.insert(0, _Hide())
t = time.perf_counter()
import monai
print(time.perf_counter() - t, int("sympy" in sys.modules), int("torch.distributed.fsdp" in sys.modules))
"""


def run(hidden: tuple[str, ...]) -> tuple[float, bool, bool]:
    """Seconds of ``import monai`` in a fresh interpreter with ``hidden`` packages refused; whether sympy
    and torch's FSDP were imported."""
    out = subprocess.run([sys.executable, "-c", _PROBE.format(hidden=set(hidden))], check=True, capture_output=True, text=True)
    secs, sympy, fsdp = out.stdout.split()[-3:]
    return float(secs), sympy == "1", fsdp == "1"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--hide", nargs="+", default=["ignite"], help="top-level packages to hide (default: ignite)")
    args = p.parse_args(argv)
    hidden = tuple(args.hide)
    times: dict[str, list[float]] = {"as installed": [], f"without {', '.join(hidden)}": []}
    for r in range(args.rounds):
        for label, h in (("as installed", ()), (f"without {', '.join(hidden)}", hidden)):
            secs, sympy, fsdp = run(h)
            times[label].append(secs)
            print(f"round {r + 1}, {label}: import monai {secs:.2f} s (sympy loaded: {sympy}, torch FSDP loaded: {fsdp})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"median, {k}: {v:.2f} s")
    a, b = med.values()
    print(f"difference of the medians: {a - b:.2f} s ({(a - b) / a:.0%} of `import monai` as installed)")


if __name__ == "__main__":
    main()
