"""``python -m zspace``: the command line; also what ``torchrun -m zspace`` runs on each rank."""
import sys

from .cli import main
from .training.distributed import shutdown

if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutdown()
    sys.exit(code)
