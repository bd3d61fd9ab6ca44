"""The data stages: sources and downloads, synthetic art, image reading, face detection, augmentation, validation."""
