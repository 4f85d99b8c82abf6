"""``python -m utils.data --data-root DIR [--json]``: check a dataset folder and print its summary."""

import sys

from utils.data.summary import main

sys.exit(main())
