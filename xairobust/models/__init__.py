"""Model builders, registered by name in ``xairobust.registry.MODELS``.

Each module in this package registers builders ``(num_outputs, in_channels, **kwargs) -> nn.Module``
returning the raw network; ``create_model`` wraps it with the dataset's normalisation.
"""

from xairobust.models.base import Normalize, NormalizedModel, create_model

__all__ = ["Normalize", "NormalizedModel", "create_model"]
