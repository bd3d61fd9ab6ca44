"""Quality measures: FID and KID with the standard TF Inception network."""
