"""Building blocks shared by the methods (GAN, style transfer, translation): adversarial losses and feature
normalisation operators. Method-neutral: it imports no method package, and every method may import it.

=============  ======================================================================================
module         what
=============  ======================================================================================
``losses``     adversarial losses (bce, hinge, wgan-gp) and the WGAN-GP gradient penalty
``norm``       per-channel feature statistics, mean-variance normalisation, AdaIN
=============  ======================================================================================
"""
