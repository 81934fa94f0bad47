"""`python -m fdlayers`: the same command line as `fdlayers`."""

import sys

from fdlayers.cli import main

sys.exit(main())
