"""Photo <-> anime translation: an unpaired, cycle-consistent GAN with attention (U-GAT-IT / AttentionGAN)."""
