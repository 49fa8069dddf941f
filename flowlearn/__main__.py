"""`python -m flowlearn` runs the command line."""

import sys

from flowlearn.cli import main

sys.exit(main())
