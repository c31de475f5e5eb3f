"""Training methods (registered in ``xairobust.registry.METHODS``) and the training loop.

Each module in this package registers one method: a ``TrainingMethod`` subclass with a
``Params`` dataclass whose ``__post_init__`` validates the hyper-parameters.
"""
