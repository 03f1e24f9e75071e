"""``python -m mpcvit``: the same command line as the ``mpcvit`` console script."""

import sys

from mpcvit.cli import main

sys.exit(main())
