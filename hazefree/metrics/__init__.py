"""Image quality metrics.

Full-reference (:mod:`hazefree.metrics.full_reference`, re-exported here): :func:`psnr`,
:func:`ssim` and the luma :func:`rgb_to_y`.

No-reference (:mod:`hazefree.metrics.fade`): ``from hazefree.metrics.fade import fade``, the
perceptual fog density of Choi, You & Bovik (IEEE TIP 2015). The function is deliberately not
re-exported here: ``hazefree.metrics.fade`` stays the module, so ``import hazefree.metrics.fade``
and ``from hazefree.metrics.fade import fade`` both keep working.
"""

from .full_reference import SSIM_VARIANTS, Reduction, SsimVariant, psnr, rgb_to_y, ssim

__all__ = ["psnr", "ssim", "rgb_to_y", "SSIM_VARIANTS", "SsimVariant", "Reduction"]
