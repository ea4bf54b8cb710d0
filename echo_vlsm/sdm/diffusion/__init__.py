"""Diffusion for the SDM: cosine schedule, training with EMA and checkpoints, samplers.

The noise schedule is the cosine one (Nichol & Dhariwal 2021; ``squaredcos_cap_v2`` in
``diffusers``), T = 1000, and the samplers see the noise (epsilon); the network predicts
``v`` (default) or the noise. Training draws its ``alphas_cumprod`` from the same
``diffusers`` scheduler the samplers use (``ddpm`` 1000 steps, ``ddim`` 50, ``dpm++`` 20), and
learns classifier-free guidance (Ho & Salimans 2022) by dropping the label map.

The package, along its seams:

- ``config``: ``SDMConfig`` (what a run depends on), view/phase indices, the SDM's precision
  rule (``auto``: bf16 on a GPU that supports it, else fp32);
- ``schedule``: the noise schedule, the training loss, ``EpsilonModel`` (v -> epsilon);
- ``ema``: the moving average of the weights;
- ``data``: the training data (images and 5-class maps) of an exported dataset;
- ``sampling``: ``diffusers`` schedulers, guidance, ``sample`` and the ready-to-sample ``SDM``;
- ``checkpoints``: the files of a run directory, ``load_sdm``, ``read_history``;
- ``training``: ``train_sdm`` (resumable) and its sample grids.

Examples::

    train_sdm("data/phantom", "runs/demo/sdm", SDMConfig(size="tiny", train_steps=200))
    sdm = load_sdm("runs/demo/sdm")
    images = sdm.sample(maps, sampler="dpm++", steps=20)    # uint8 (B, 64, 64)
"""

from echo_vlsm.sdm.diffusion.checkpoints import epsilon_model, load_sdm, read_history
from echo_vlsm.sdm.diffusion.config import (
    NULL_VIEW_PHASE,
    VIEW_PHASE,
    SDMConfig,
    resolve_sdm_precision,
)
from echo_vlsm.sdm.diffusion.data import TrainingData, load_training_data
from echo_vlsm.sdm.diffusion.ema import EMA
from echo_vlsm.sdm.diffusion.sampling import (
    DEFAULT_STEPS,
    SAMPLERS,
    SDM,
    guidance_inputs,
    guided_eps,
    make_scheduler,
    sample,
    to_uint8,
)
from echo_vlsm.sdm.diffusion.schedule import (
    NUM_TRAIN_TIMESTEPS,
    SCHEDULE,
    EpsilonModel,
    diffusion_loss,
    training_alphas_cumprod,
)
from echo_vlsm.sdm.diffusion.training import sample_grid, train_sdm

__all__ = [
    "DEFAULT_STEPS", "EMA", "NULL_VIEW_PHASE", "NUM_TRAIN_TIMESTEPS", "SAMPLERS", "SCHEDULE",
    "SDM", "SDMConfig", "TrainingData", "VIEW_PHASE", "EpsilonModel", "diffusion_loss",
    "epsilon_model", "guidance_inputs", "guided_eps", "load_sdm", "load_training_data",
    "make_scheduler", "read_history", "resolve_sdm_precision", "sample", "sample_grid",
    "to_uint8", "train_sdm", "training_alphas_cumprod",
]
