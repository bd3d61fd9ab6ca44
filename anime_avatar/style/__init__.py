"""Style transfer: anime avatars from a face or a photo, in the style of a chosen illustration.

=================  =================================================================================
module             what
=================  =================================================================================
``features``       the frozen feature networks (FID Inception v3, offline; torchvision's VGG-19)
``losses``         Gram, content, style, total-variation losses, the softmax transform (AdaIN and
                   mean-variance normalisation: :mod:`anime_avatar.nn.norm`)
``gatys``          optimisation-based transfer (Gatys et al.), L-BFGS or Adam
``nets``           the attention fusion network (SANet-like) and the AdaIN baseline, one class
``data``           style image sets (folder or archive) and seeded training batches
``training``       the stylizer's training loop: both nets on the same batches, exact resume
``transfer``       one entry point for every method (gatys, network, adain), used by the CLI and the stages
``evaluation``     every method on a fixed content/style set: losses, speed, the comparison sheet
=================  =================================================================================
"""
