"""``python -m earlyprune …`` (and ``torchrun --nproc_per_node N -m earlyprune train …``): the ``earlyprune``
command."""

import sys

from .cli import main

sys.exit(main())
