"""``python -m zspace``: the command line; also what ``torchrun -m zspace`` runs on each rank."""
from .cli import run

if __name__ == "__main__":
    run()
