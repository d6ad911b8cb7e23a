"""rethink: the controlled experiment of "Rethinking ImageNet Pre-training" on your own detection data."""

__version__ = "0.1.0"
