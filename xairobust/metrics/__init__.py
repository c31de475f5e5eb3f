"""Explanation-quality metrics (registered in ``xairobust.registry.METRICS``), Quantus-backed."""
