"""Stand-ins in the formats the paper profile reads, for a rehearsal of the paper path.

A researcher with CAMUS, the study's weights and a GPU should not be the first to run the
paper profile. :func:`build_standins` writes, once, files in the very formats the paper
profile reads, with simulated data and random weights: a CAMUS 2019 tree, a released
SDM-CAMUS folder, CLIPSeg rd64-refined as a ``save_pretrained`` folder, OpenAI's CLIP RN50 as
a TorchScript archive and a community CRIS checkpoint. They load through the same code as the
real files (``echo_vlsm.models.build_model``, ``echo_vlsm.sdm.released``); nothing they give
is a result. :func:`standin_env` gives the environment variables under which
``pretrained: true`` resolves to them (``docs/weights.md``).

Examples::

    paths = build_standins("data/rehearsal")        # skips what exists
    os.environ.update(standin_env(paths))           # pretrained=True now finds them
"""

from echo_vlsm.rehearsal.standins import (
    STANDINS,
    build_standins,
    save_openai_torchscript,
    standin_env,
    write_released_standin,
)

__all__ = ["STANDINS", "build_standins", "save_openai_torchscript", "standin_env",
           "write_released_standin"]
