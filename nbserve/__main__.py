import sys

from nbserve.cli import main

sys.exit(main())
