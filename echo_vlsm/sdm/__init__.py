"""The semantic diffusion model (SDM) of Echo from Noise (ASMUS 2023), rebuilt.

- ``labels``: 5-class maps (outside, LV, tissue, myocardium, LA) and the ultrasound sector;
- ``unet``: the SPADE-conditioned UNet (sizes ``paper`` and ``tiny``);
- ``diffusion`` (a package): cosine schedule, training (EMA, checkpoints, resume),
  ``diffusers`` samplers (1000-step DDPM, DDIM, DPM-Solver++), classifier-free guidance;
- ``perturb``: new label maps from real ones (affine + elastic, clipped to the sector);
- ``synthesize``: the synthetic dataset, its fidelity, sampler timings;
- ``released``: the study's own released synthetic set (SDM-CAMUS) as an exported dataset;
- ``plots``: the figures of notebook 02.

Examples::

    from echo_vlsm.sdm import SDMConfig, train_sdm, load_sdm, synthesize, fidelity
    train_sdm("data/phantom", "runs/demo/sdm", SDMConfig())
    synthesize("runs/demo/sdm", "data/phantom", n_per_map=5)   # -> data/phantom-synthetic
    fidelity("data/phantom-synthetic")["lv_darker_than_myo"]
"""

from echo_vlsm.sdm.diffusion import (
    SDM,
    SDMConfig,
    load_sdm,
    make_scheduler,
    read_history,
    sample,
    train_sdm,
)
from echo_vlsm.sdm.labels import sector_mask, to_camus_label, to_sdm_map
from echo_vlsm.sdm.perturb import PerturbConfig, perturb_map, perturb_maps
from echo_vlsm.sdm.released import ReleasedFormatError, import_released
from echo_vlsm.sdm.synthesize import fidelity, synthesize, time_samplers
from echo_vlsm.sdm.unet import UNET_SIZES, build_unet

__all__ = [
    "SDM", "SDMConfig", "UNET_SIZES", "PerturbConfig", "ReleasedFormatError", "build_unet",
    "fidelity", "import_released", "load_sdm", "make_scheduler", "perturb_map", "perturb_maps",
    "read_history", "sample", "sector_mask",
    "synthesize", "time_samplers", "to_camus_label", "to_sdm_map", "train_sdm",
]
