"""Execute the tutorials and keep their outputs: ``python docs/tutorials/run.py [NOTEBOOK ...]``.

Each notebook runs top to bottom in a fresh ``python3`` kernel (ipykernel of the running interpreter,
working directory ``docs/tutorials/``; the notebooks write only into temporary folders) and is saved in
place with its outputs and figures, volatile metadata (execution times) dropped. A cell that fails stops
the run with the notebook unchanged. ``tests/test_tutorials.py`` runs :func:`execute` without saving.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("research_script.ipynb", "cohort_uncertainty.ipynb")


def execute(path: str | Path, *, timeout: int = 600):
    """Run the notebook at ``path``; return the executed ``nbformat.NotebookNode`` (raises
    ``nbclient.exceptions.CellExecutionError`` naming the cell on the first error)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).resolve().parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    import nbformat

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", help=f"default: {', '.join(NOTEBOOKS)}")
    args = p.parse_args(argv)
    for name in args.notebooks or NOTEBOOKS:
        path = Path(name) if Path(name).exists() else HERE / name
        t0 = time.perf_counter()
        nb = execute(path)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s, saved with its outputs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
