"""``python -m relayprobe``: the same command line as the ``relayprobe`` console script."""

import sys

from relayprobe.cli import main

sys.exit(main())
