import sys

from nbserve.cli.main import main

sys.exit(main())
