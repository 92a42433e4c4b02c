"""`python -m serving`: run the daemon configured by SERVING_* variables."""

import sys

from serving.cli import main

sys.exit(main(sys.argv[1:] or ["serve"]))
