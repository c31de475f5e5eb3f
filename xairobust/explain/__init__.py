"""Explainers (registered in ``xairobust.registry.EXPLAINERS``) and the attribution file format."""
