"""The built-in echo phantom: a CAMUS-like tree of simulated apical echocardiograms.

Each phantom patient has an apical two-chamber (2CH) and four-chamber (4CH) view at
end-diastole (ED) and end-systole (ES), with a label map in CAMUS' convention
(0 background, 1 LV cavity, 2 myocardium, 3 left atrium) and ``Info_<view>.cfg`` files,
written in the layout of the CAMUS 2023 (NIfTI) or 2019 (MetaImage) release, so
``read_camus`` reads it like the real thing (Leclerc et al., IEEE TMI 2019).

How an image is made (a simplified pulse-echo model, computed on the scan lines):

1. Anatomy in mm: a bullet-shaped LV cavity pointing to the apex of the fan, a myocardial
   wall around it, open at the mitral plane, the LA below the mitral plane, mitral leaflets,
   pericardium; in 4CH also the right ventricle and atrium (unlabelled blood) with septa.
   Size, tilt, wall thickness and shape harmonics are drawn per patient; at ES the LV
   shortens and narrows (ejection fraction 30-70 %, area-length model), the wall thickens
   and the LA fills.
2. A tissue reflectivity map on the polar grid (depth x angle): blood low, myocardium high
   and angle-dependent (specular walls), other tissue medium, with slow heterogeneity;
   image quality (Good / Medium / Poor) sets clutter haze, wall dropout, rib shadows and
   electronic noise.
3. Random scatterers (dense, Gaussian) weighted by the reflectivity, convolved with a
   point-spread function: a Gaussian-modulated cosine along depth (RF, 2.5-3.5 MHz) and a
   Gaussian across the beam; depth attenuation, receiver noise, time-gain compensation,
   envelope detection (Hilbert transform along depth), log compression.
4. Scan conversion to a Cartesian fan (``cv2.remap``), apex at the top, zero outside it.

Every array depends only on ``(seed, patient number)``: patient 7 is the same whether 10
or 100 patients are written, and the same seed gives byte-identical arrays.

Examples::

    root = write_phantom("data/raw/phantom", n_patients=20, seed=0)   # 2023 layout
    records = read_camus(root)
    patient = simulate_patient(seed=0, number=1)                      # in memory
    patient.views["4CH"].images["ED"].shape

The package's modules, along its seams: ``anatomy`` (tissue classes, shapes, label maps),
``acoustics`` (the pulse-echo simulation, scan conversion), ``patients`` (random draws,
``simulate_patient``, ``simulate_stages``, LV volumes) and ``tree`` (CAMUS layout, Info
cfg and split files, markers, ``write_patient``, ``write_phantom``).
"""

from __future__ import annotations

from echo_vlsm.data.phantom.acoustics import SOUND_SPEED
from echo_vlsm.data.phantom.patients import (
    PhantomPatient,
    PhantomView,
    simulate_patient,
    simulate_stages,
)
from echo_vlsm.data.phantom.tree import (
    LAYOUTS,
    MANIFEST,
    PARTIAL,
    PATIENT_MARKER,
    PHANTOM_VERSION,
    check_layout,
    check_sizes,
    patient_splits,
    split_sizes,
    write_patient,
    write_phantom,
)

__all__ = ["LAYOUTS", "MANIFEST", "PARTIAL", "PATIENT_MARKER", "PHANTOM_VERSION", "SOUND_SPEED",
           "PhantomPatient", "PhantomView", "check_layout", "check_sizes", "patient_splits",
           "simulate_patient", "simulate_stages", "split_sizes", "write_patient", "write_phantom"]
