"""hazefree: haze, fog and thin-cloud removal.

Quick start:
    >>> import hazefree
    >>> result = hazefree.dehaze("photo.jpg")          # shipped default model
    >>> result.clear.shape                              # 1 x 3 x H x W in [0, 1]

Modules: :mod:`hazefree.physics` (scattering model, airlight), :mod:`hazefree.ops` (guided
filter), :mod:`hazefree.models` (dehazers and their registry), :mod:`hazefree.data`,
:mod:`hazefree.training`, :mod:`hazefree.metrics`, :mod:`hazefree.io`, :mod:`hazefree.cli`,
:mod:`hazefree.pipeline` (one file: read, dehaze whole or in tiles, write), :mod:`hazefree.tiling`,
:mod:`hazefree.geotiff`.
"""

from .api import Dehazer, default_method, dehaze
from .models import DehazeOutput, available
from .models import load as load

__version__ = "0.1.0"


def __getattr__(name: str):
    # hazefree.dehaze_video (hazefree.video) is imported on first use
    if name == "dehaze_video":
        from .video import dehaze_video

        return dehaze_video
    raise AttributeError(f"module 'hazefree' has no attribute {name!r}")

__all__ = ["dehaze", "dehaze_video", "Dehazer", "default_method", "load", "available", "DehazeOutput", "__version__"]
