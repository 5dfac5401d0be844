"""``python -m midilstm.batch``'s command line (``batch.py`` runs ``main``): it lives in ``cli``."""
from .cli import batch_main as main

__all__ = ["main"]
