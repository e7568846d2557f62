"""Ray Tune trainables, one per experiment family, over the pure-PyTorch core in trainables.core."""
