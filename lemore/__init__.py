"""lemore: an open reproducibility study of LeMoRe (ICIP 2025, arXiv 2505.23093)."""

from lemore import models as models  # noqa: F401  (registers every model)
from lemore.labels import predict as predict
from lemore.registry import create_model as create_model
from lemore.registry import list_models as list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "predict", "__version__"]
