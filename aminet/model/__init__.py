"""The AMINet model (``aminet.model.aminet``) and phase congruency (``aminet.model.phase``)."""

from aminet.model.aminet import AMINet, WeightsUnavailable, build_model

__all__ = ["AMINet", "WeightsUnavailable", "build_model"]
