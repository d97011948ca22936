"""``python -m seg_runtime`` is ``seg-run``."""

import sys

from .cli import main

sys.exit(main())
