"""Tasks by name: each knows its model, data, loss and metrics."""

from __future__ import annotations

from fedpersonal.config import require_choice
from fedpersonal.tasks.base import ClientData, Task
from fedpersonal.tasks.gaze import GazeTask

TASKS: dict[str, type[Task]] = {"gaze": GazeTask}


def get_task(name: str) -> Task:
    """The task registered as ``name``; a ConfigError on key 'task' names the choices."""
    require_choice("task", name, TASKS)
    return TASKS[name]()


__all__ = ["TASKS", "ClientData", "Task", "get_task"]
