"""``python -m worker.stack up|down|status`` (same as ``online-als stack ...``)."""

import sys

from worker.stack.cli import main

sys.exit(main())
