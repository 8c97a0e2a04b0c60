"""``task=recommendation``: sequential recommendation (SASRec family) on the ``mha`` core."""
