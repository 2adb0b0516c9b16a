"""``python -m worker.cli ...``: the ``online-als`` entry point without the installed script."""

import sys

from worker.cli.main import main

sys.exit(main())
