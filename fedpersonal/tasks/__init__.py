"""Tasks by name: each knows its model, data, loss and metrics."""

from __future__ import annotations

from fedpersonal.config import RunConfig, require_choice
from fedpersonal.data.partition import PartitionSettings
from fedpersonal.tasks.base import ClientData, Task
from fedpersonal.tasks.classify import ClassifySettings, ClassifyTask
from fedpersonal.tasks.face import FaceSettings, FaceTask
from fedpersonal.tasks.gaze import GazeSettings, GazeTask

TASKS: dict[str, type[Task]] = {"gaze": GazeTask, "classify": ClassifyTask, "face": FaceTask}
# Run-config sections the tasks read (their settings dataclasses).
TASK_SECTIONS: tuple[type, ...] = (PartitionSettings, GazeSettings, ClassifySettings, FaceSettings)


def get_task(name: str, cfg: RunConfig | None = None) -> Task:
    """The task registered as ``name`` for run config ``cfg``; a ConfigError on key 'task' names the choices."""
    require_choice("task", name, TASKS)
    return TASKS[name](cfg)


__all__ = ["TASK_SECTIONS", "TASKS", "ClientData", "Task", "get_task"]
