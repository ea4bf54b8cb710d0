"""echo-vlsm: a research compendium for *Synthetic Boost* (ASMUS 2023).

Vision-language segmentation (CLIPSeg, CRIS) of the left-ventricular cavity, myocardium and
left atrium in echocardiography, trained on real (CAMUS), synthetic (semantic diffusion)
and both. The notebooks in ``notebooks/`` tell the story; every piece of logic lives here.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``echo_vlsm.segment`` without importing torch at ``import echo_vlsm``."""
    if name == "segment":
        from echo_vlsm.inference import segment

        return segment
    raise AttributeError(f"module 'echo_vlsm' has no attribute {name!r}")
