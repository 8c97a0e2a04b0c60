"""Image classification with a ViT built from ``mha`` blocks (``task=vision``)."""
