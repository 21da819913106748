"""edgekit: from a PyTorch training recipe to fast int8 inference on a Raspberry Pi."""

__version__ = "0.1.0"
