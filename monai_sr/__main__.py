"""``python -m monai_sr ...`` is the ``monai-sr`` command (what ``torchrun -m monai_sr`` launches)."""

from monai_sr.cli import main

raise SystemExit(main())
