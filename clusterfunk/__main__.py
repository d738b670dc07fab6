import sys

from clusterfunk.cli import main

sys.exit(main())
