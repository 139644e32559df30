"""Quality and speed harnesses (see README.md); run each as ``python -m benchmarks.<name>`` from the
repository root, or ``python benchmarks/<name>.py`` for those that import no sibling module."""
