"""``python -m temporal_saga``: see :mod:`temporal_saga._cli`."""

import os
import sys

from ._cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)  # skip interpreter teardown: the SDK can crash there (sdk-python issue 300)
