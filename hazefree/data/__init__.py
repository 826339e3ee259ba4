"""Datasets: pairing rules of the benchmarks' real layouts, synthetic haze, deterministic crops.

Pairing (``find_pairs``) understands, under one root folder:

* ``hazy/`` + ``clear/`` (aliases: ``GT``, ``gt``, ``label``, ``clean``, ``target``,
  ``ground_truth``; for the hazy side ``haze``, ``cloud``, ``cloudy``, ``input``) with
    - identical names (SOTS as packaged by DehazeFormer, RICE ``cloud``/``label``),
    - RESIDE names: ``1410_3.png`` -> ``1410.png``, ``0001_0.8_0.2.jpg`` -> ``0001.png`` (the scene
      id before the first underscore),
    - O-HAZE / I-HAZE / NH-HAZE names: ``35_outdoor_hazy.jpg`` <-> ``35_outdoor_GT.jpg``,
      ``01_hazy.png`` <-> ``01_GT.png`` (the ``hazy`` token replaced by ``GT``/``clear``);
* one flat folder holding both ``*_hazy.*`` and ``*_GT.*`` files (the NTIRE archives);
* a user pattern: a regular expression with a named group ``key`` matched against the hazy stem,
  the clear image being the one whose stem equals ``key``.

Hazy images without a clear partner are reported (``PairSet.unmatched``, and a warning), never
silently dropped. Tensors follow the library contract: float32 N x C x H x W in [0, 1].

Modules: :mod:`~hazefree.data.pairs` (pairing and loading), :mod:`~hazefree.data.synthesis`
(haze from depth), :mod:`~hazefree.data.bank` (images in memory, re-rendered levels, sources) and
:mod:`~hazefree.data.sampler` (deterministic crops). Everything is imported from ``hazefree.data``.
"""

from .bank import PairBank, check_every_source_named, source_draw_weights, source_labels
from .pairs import (
    AIRLIGHTS_FILE,
    CLEAR_DIRS,
    HAZY_DIRS,
    MAX_CROP_BORDER,
    Pair,
    PairSet,
    center_crop_to_match,
    find_pairs,
    load_pair,
    read_airlights,
    split_unpaired,
    write_airlights,
)
from .sampler import CropSampler
from .synthesis import (
    DepthSample,
    density_field,
    find_depth_samples,
    read_depth,
    synthesize_haze,
)

__all__ = [
    "Pair",
    "PairSet",
    "find_pairs",
    "load_pair",
    "center_crop_to_match",
    "MAX_CROP_BORDER",
    "HAZY_DIRS",
    "CLEAR_DIRS",
    "split_unpaired",
    "AIRLIGHTS_FILE",
    "read_airlights",
    "write_airlights",
    "read_depth",
    "DepthSample",
    "find_depth_samples",
    "synthesize_haze",
    "density_field",
    "PairBank",
    "source_labels",
    "check_every_source_named",
    "source_draw_weights",
    "CropSampler",
]
