"""The GAN method: networks, losses, DiffAugment, EMA, the training loop, and inference (sampling, walks, grids)."""
