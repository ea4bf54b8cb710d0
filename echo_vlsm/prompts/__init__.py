"""Text prompts P0..P7 of the study and the task files that pair them with images and masks.

- ``Attributes`` / ``make_prompts``: the study's wording (templates.py);
- ``shape_of``: the shape word of a mask, by geometry or by a VQA model (shape.py, vqa.py);
- ``write_tasks`` / ``read_tasks`` / ``pick_prompt``: task files per dataset and split (tasks.py).
"""

from echo_vlsm.prompts.shape import SHAPES, shape_measures, shape_of
from echo_vlsm.prompts.tasks import (
    TaskFileError,
    build_tasks,
    pick_prompt,
    read_tasks,
    task_path,
    write_tasks,
)
from echo_vlsm.prompts.templates import (
    KINDS,
    PROMPT_KEYS,
    Attributes,
    age_words,
    make_prompts,
    phrasings_of,
    prompt_keys,
    required_attributes,
)

__all__ = [
    "KINDS", "PROMPT_KEYS", "SHAPES", "Attributes", "TaskFileError", "age_words",
    "build_tasks", "make_prompts", "phrasings_of", "pick_prompt", "prompt_keys", "read_tasks",
    "required_attributes", "shape_measures", "shape_of", "task_path", "write_tasks",
]  # fmt: skip
