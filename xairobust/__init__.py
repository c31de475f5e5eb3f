"""xairobust: are robust models more interpretable than standard ones, and by how much?

Public API: ``load_run``, ``create_model``, ``get_dataset``.
"""

from xairobust.data.base import get_dataset
from xairobust.models.base import create_model
from xairobust.runs import load_run

__all__ = ["create_model", "get_dataset", "load_run"]
__version__ = "0.1.0"
