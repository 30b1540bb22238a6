"""``models.network.get_model``, the name frito's README gave :func:`models.passt.get_model` after its redesign;
both paths import the one function of :mod:`models.passt`."""

from models.passt import get_model

__all__ = ["get_model"]
