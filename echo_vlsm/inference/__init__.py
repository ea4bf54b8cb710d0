"""Use a trained model: segment any echo image with a prompt, and share the model.

- ``segment(model, image, prompt)``: a run folder, an exported model folder or a built model;
  an image path (PNG/JPEG, CAMUS ``.mhd``/``.nii.gz``, 2-D DICOM) or array; a free text or a
  prompt key with attributes -> :class:`Segmentation` (probability map and mask at the
  image's size, the prompt used). Also ``echo_vlsm.segment`` and ``echo-vlsm segment``.
- ``export_model(run_dir, out_dir)``: the run as a Hugging Face hub folder with a model card
  (``echo-vlsm export-model``); ``push_model(out_dir, repo)`` uploads it.
- ``load_model(source)``: what ``segment`` loads, once, to segment many images.
"""

from echo_vlsm.inference.export import ExportError, export_model, model_card, push_model
from echo_vlsm.inference.images import IMAGE_SUFFIXES, ImageError, read_image, stem_of
from echo_vlsm.inference.loading import LoadedModel, ModelFolderError, load_model
from echo_vlsm.inference.segment import (
    Segmentation,
    overlay,
    prompt_text,
    segment,
    write_result,
)

__all__ = ["IMAGE_SUFFIXES", "ExportError", "ImageError", "LoadedModel", "ModelFolderError",
           "Segmentation", "export_model", "load_model", "model_card", "overlay", "prompt_text",
           "push_model", "read_image", "segment", "stem_of", "write_result"]
