import sys

from runner.cli import app

sys.exit(app())
