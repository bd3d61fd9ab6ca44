"""The GAN method: networks, losses, DiffAugment, the training loop (with nn/ema.py's weight average), and
inference (sampling, walks, grids)."""
