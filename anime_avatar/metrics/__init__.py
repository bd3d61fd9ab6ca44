"""Quality measures: FID and KID with the standard TF Inception network; the stylizer's structure and colour.

======================  ===========================================================================
module                  what
======================  ===========================================================================
``inception``           the FID Inception network's TorchScript file, loaded once per device
``inception_backends``  the same network through OpenVINO or ONNX Runtime (checked against it)
``features``            Inception features of images: the input convention, the extractor, batches
``feature_cache``       the real set's features, cached by dataset version
``fid``                 FID and KID of two sets of images or features (torchmetrics)
``stylize``             edge SSIM and Lab colour distance of stylised images
======================  ===========================================================================

A generator's samples are scored by :mod:`anime_avatar.gan.evaluation`.
"""
