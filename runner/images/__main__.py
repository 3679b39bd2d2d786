import sys

from runner.images import main

sys.exit(main())
