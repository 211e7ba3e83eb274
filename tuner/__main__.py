import sys

from .search import main

sys.exit(main())
