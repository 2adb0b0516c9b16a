"""``python -m worker.devstack up|down|status`` (same as ``online-als stack ...``)."""

import sys

from worker.devstack.cli import main

sys.exit(main())
