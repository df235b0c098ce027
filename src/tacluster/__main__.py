"""``python -m tacluster`` = the ``tacluster`` command."""

import sys

from tacluster.cli import main

sys.exit(main())
