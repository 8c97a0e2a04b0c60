"""Task ``translation``: an encoder-decoder Transformer on the ``mha`` core (see README.md here).

``python train.py task=translation`` trains on embedded number/date phrases; ``python -m
tasks.translation.translate ckpt=<path> "sentence"`` translates with a trained checkpoint.
"""
