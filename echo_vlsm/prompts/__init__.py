"""Text prompts P0..P7 of the study and the task files that pair them with images and masks.

- ``Attributes`` / ``make_prompts``: the study's wording (templates.py);
- ``shape_of``: the shape word of a mask, by geometry (shape.py) or by a VQA model (vqa.py),
  chosen in shape_backends.py;
- ``write_tasks`` / ``read_tasks``: task files per dataset and split; ``prompt_candidates`` /
  ``pick_prompt``: which texts a prompt key gives for a task, and one drawn (tasks.py).
"""

from echo_vlsm.prompts.shape import SHAPES, geometric_shape, shape_measures
from echo_vlsm.prompts.shape_backends import BACKENDS, shape_of
from echo_vlsm.prompts.tasks import (
    TaskFileError,
    build_tasks,
    pick_prompt,
    prompt_candidates,
    read_tasks,
    task_path,
    write_tasks,
)
from echo_vlsm.prompts.templates import (
    KINDS,
    PROMPT_KEYS,
    PROVENANCE_PHRASES,
    Attributes,
    age_words,
    make_prompts,
    phrasings_of,
    prompt_keys,
    required_attributes,
    with_provenance,
)

__all__ = [
    "BACKENDS", "KINDS", "PROMPT_KEYS", "PROVENANCE_PHRASES", "SHAPES", "Attributes",
    "TaskFileError", "age_words", "build_tasks", "geometric_shape", "make_prompts",
    "phrasings_of", "pick_prompt", "prompt_candidates", "prompt_keys", "read_tasks",
    "required_attributes", "shape_measures", "shape_of", "task_path", "with_provenance",
    "write_tasks",
]
