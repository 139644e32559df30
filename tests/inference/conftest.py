"""Puts this folder on sys.path so the tests import :mod:`sr_helpers`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
