"""`zspace runs [DIR]`: every run folder under DIR, what it is and where it stands.

A run is a folder holding ``config.json`` (a zspace run config). Its status:

    finished       the latest checkpoint reached the planned epochs / steps
    interrupted    stopped before that, with a complete checkpoint: ``--resume`` continues it
    not started    stopped before its first checkpoint: nothing to resume, train it again
    damaged        its config or latest checkpoint cannot be read; the reason says which file

Nothing here loads weights or data: listing a folder of runs is quick and never fails on one
bad run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ZspaceError
from .checkpoint import CONFIG_FILE, latest_checkpoint, read_state
from .config import TrainConfig

FINISHED, INTERRUPTED, NOT_STARTED, DAMAGED = "finished", "interrupted", "not started", "damaged"
# the test metric shown first when a run has it (else the first test_ column)
KEY_METRICS = ("test_elbo", "test_nll", "test_loss", "test_fvu", "test_mse", "test_rec")
MAX_DEPTH = 6      # folders below DIR searched for runs


@dataclass
class RunSummary:
    path: Path
    status: str
    model: str = "?"
    data: str = "?"
    progress: str = ""                 # "epoch 3/10, step 690" or "step 500/1000"
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""                   # why damaged / what to do

    def as_row(self, root: Path) -> list[str]:
        try:
            name = str(self.path.relative_to(root)) or "."
        except ValueError:
            name = str(self.path)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        status = self.status + (f": {self.reason}" if self.reason else "")
        return [name, self.model, self.data, self.progress, shown, status]


def find_run_folders(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Folders under ``root`` (itself included) holding a config.json, sorted; a run's own
    subfolders (checkpoints, figures) are not searched."""
    found = []
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if CONFIG_FILE in files:
            found.append(here)
            dirs[:] = [d for d in dirs if d not in ("checkpoints", "figures", "tensorboard")]
        if depth >= max_depth:
            dirs[:] = []
    return sorted(found)


def summarize_run(path: Path) -> RunSummary:
    """One run folder's summary; a damaged one says why, in a line, and never raises."""
    path = Path(path)
    try:
        return _summarize(path)
    except ZspaceError as e:
        return RunSummary(path, DAMAGED, reason=_one_line(e))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:   # anything else odd in a file
        return RunSummary(path, DAMAGED, reason=_one_line(e))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _summarize(path: Path) -> RunSummary:
    from .run import read_run_config

    cfg = read_run_config(path)
    model = cfg["model"].get("name", "?")
    summary = RunSummary(path, DAMAGED, model=str(model), data=str(cfg["data"].get("source", "?")))
    if cfg.get("prior_of"):
        summary.data = f"codes of {Path(str(cfg['prior_of'])).name}"
    train = TrainConfig.from_dict(cfg["train"])
    if not (path / "checkpoints" / "latest").exists():
        summary.status, summary.reason = NOT_STARTED, "no checkpoint yet; train it again (--overwrite)"
        return summary
    checkpoint = latest_checkpoint(path)
    state = read_state(checkpoint)
    if not (checkpoint / "model.safetensors").is_file():
        summary.reason = f"{checkpoint.name} has no model.safetensors"
        return summary
    epoch, step, batch = state["epoch"], state["step"], state["batch"]
    if train.steps is not None:
        done = step >= train.steps
        summary.progress = f"step {step}/{train.steps}, epoch {epoch}"
    else:
        done = epoch >= train.epochs and batch == 0
        summary.progress = f"epoch {epoch}/{train.epochs}, step {step}"
    summary.status = FINISHED if done else INTERRUPTED
    if not done:
        summary.reason = "resumable with --resume"
    summary.metrics = _key_metrics(state["history"][-1])
    summary.metrics.update(_evaluation(path))
    return summary


def _key_metrics(row: dict) -> dict[str, float]:
    numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    key = next((k for k in KEY_METRICS if k in numbers), None)
    key = key or next((k for k in numbers if k.startswith("test_")), None)
    return {key: float(numbers[key])} if key else {}


def _evaluation(path: Path) -> dict[str, float]:
    """The NLL and bits/dim of the run's most precise test evaluation (eval-test-*.json)."""
    best, best_k = {}, -1
    for f in sorted(path.glob("eval-test-*.json")):
        try:
            if f.stat().st_size > 1 << 20:
                continue
            result = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("nll"), (int, float)):
            continue
        k = 10**9 if result.get("exact") else int(result.get("num_samples") or 0)
        if k > best_k:
            tag = "exact" if result.get("exact") else f"k={k}"
            best, best_k = {f"NLL ({tag})": float(result["nll"])}, k
            if isinstance(result.get("bits_per_dim"), (int, float)):
                best["bits/dim"] = float(result["bits_per_dim"])
    return best


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run under ``root`` (a folder), summarised."""
    root = Path(root)
    if not root.exists():
        from ..errors import ConfigError

        raise ConfigError(f"{root}: no such folder")
    if not root.is_dir():
        from ..errors import ConfigError

        raise ConfigError(f"{root}: not a folder")
    return [summarize_run(p) for p in find_run_folders(root)]


def runs_table(summaries: list[RunSummary], root: Path) -> str:
    """A plain-text table, one line per run (columns padded to their widest cell)."""
    head = ["run", "model", "data", "progress", "metrics", "status"]
    rows = [head] + [s.as_row(Path(root)) for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(line.rstrip() for line in lines)
