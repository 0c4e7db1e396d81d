"""flowprobe: how information flows through the layers and pathways of a network."""

__version__ = "0.1.0"
