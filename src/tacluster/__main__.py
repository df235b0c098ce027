"""``python -m tacluster`` = the ``tacluster`` command."""

import sys

from tacluster.run.cli import main

sys.exit(main())
