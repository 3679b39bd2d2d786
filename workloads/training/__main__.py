"""Entry point: ``python -m workloads.training [flags]`` (``--help`` lists them with their env vars)."""

import sys

from workloads.training.train import main

sys.exit(main())
