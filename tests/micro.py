"""A micro profile for the runner's tests: small notebooks (written in tmp) stand in for
steps 01, 04 and 06; each training run logs itself to ``runs/executions.log``."""


import nbformat
import yaml

TRAIN_SRC = '''
import json, pathlib
root = pathlib.Path(runs_root)
run = f"{model}_{strategy}_{encoders}_{prompt}"
with open(root.parent / "executions.log", "a") as f:
    f.write(run + "\\n")
if strategy == "synth-pt-real-ft":
    src = "p6" if prompt == "p7" else prompt
    assert (root / f"{model}_synthetic_{encoders}_{src}" / "summary.json").is_file()
'''
TRAIN_FAIL = '''
if strategy == fail_strategy:
    raise ValueError(f"deliberate failure in {run}")
'''
TRAIN_WRITE = '''
d = root / run
d.mkdir(parents=True, exist_ok=True)
(d / "metrics.csv").write_text("model,strategy\\n" + f"{model},{strategy}\\n")
(d / "model.safetensors").write_bytes(b"\\x02" + bytes(7) + b"{}")  # empty, valid
from echo_vlsm.grid import file_records
(d / "summary.json").write_text(json.dumps({"best_epoch": 1, "best_val_dice": 0.5,
    "seconds_to_best": 1.0, "epochs_run": 1, "seconds_total": 1.0, "done": True,
    "files": file_records(d, ["metrics.csv", "model.safetensors"])}))
'''


def write_notebook(path, params, *cells):
    """A notebook at ``path``: a ``parameters`` cell, then one code cell per ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def make_micro(tmp_path):
    """A folder of small notebooks and a profile factory (absolute paths in tmp)."""
    nbs = tmp_path / "nbs"
    nbs.mkdir(parents=True)
    write_notebook(nbs / "01_data_preparation.ipynb", 'out_dir = "x"',
              'import pathlib\np = pathlib.Path(out_dir)\np.mkdir(parents=True, exist_ok=True)\n'
              'with open(p / "prepared.log", "a") as f:\n    f.write("prepared\\n")')
    write_notebook(nbs / "04_train_vlsm.ipynb",
              'model = strategy = encoders = prompt = runs_root = fail_strategy = ""',
              TRAIN_SRC, TRAIN_FAIL, TRAIN_WRITE)
    write_notebook(nbs / "06_dice_difference_plots.ipynb",
              'profile = ""\nruns_root = ""\nfigures_dir = ""\ntables_dir = ""',
              'import pathlib\nruns = sorted(p.parent.name for p in '
              'pathlib.Path(runs_root).glob("*/summary.json"))\n'
              't = pathlib.Path(tables_dir)\nt.mkdir(parents=True, exist_ok=True)\n'
              '(t / "report.md").write_text(profile + ": " + " ".join(runs))')

    def make(grid, train=None, analysis=True):
        prof = {
            "profile": "micro",
            "runs_root": str(tmp_path / "runs" / "micro"),
            "steps": {"01_data_preparation": {"out_dir": str(tmp_path / "data")}},
            "train": {"fail_strategy": None, **(train or {})},
            "grid": grid,
        }
        if analysis:
            prof["steps"]["06_dice_difference_plots"] = {
                "figures_dir": str(tmp_path / "figures"), "tables_dir": str(tmp_path / "paper")}
        path = tmp_path / "micro.yaml"
        path.write_text(yaml.safe_dump(prof))
        return path

    return tmp_path, nbs, make


def executions(tmp_path):
    log = tmp_path / "runs" / "executions.log"
    return log.read_text().split() if log.exists() else []
