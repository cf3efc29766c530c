"""worldforge: train and compress action-conditioned video world models."""

__version__ = "0.1.0"
