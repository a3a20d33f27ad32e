"""A 'server' that exits at once with an error."""

import sys

sys.stderr.write("cannot start: missing configuration\n")
sys.exit(2)
