"""``python -m custsync_pipeline.sandbox``: same as ``custsync sandbox``."""

import sys

from .cli import main

sys.exit(main())
