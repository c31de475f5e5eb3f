"""Datasets, registered by name in ``xairobust.registry.DATASETS``.

Each module in this package registers one dataset source (see ``base.DatasetSource``).
"""

from xairobust.data.base import DatasetInfo, DatasetSource, DataSplit, get_dataset, resolve_data_dir

__all__ = ["DataSplit", "DatasetInfo", "DatasetSource", "get_dataset", "resolve_data_dir"]
