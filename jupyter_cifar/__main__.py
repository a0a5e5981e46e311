"""``python -m jupyter_cifar``: the same command line as ``jupyter cifar``."""

import sys

from .cli import main

sys.exit(main())
