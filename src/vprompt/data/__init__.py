"""The data layer: VTAB-1k file-list folders, their checker, and the offline synthetic suite."""

from .check import CheckReport, check_dataset
from .filelist import SPLIT_SIZES, SPLITS, FileListDataset, TaskDataset, TaskInfo, read_split, task_info
from .memory import InMemoryDataset, in_memory
from .synthetic import TASKS, SynthTask, write_synthetic_suite

__all__ = [
    "SPLITS",
    "SPLIT_SIZES",
    "TASKS",
    "CheckReport",
    "FileListDataset",
    "InMemoryDataset",
    "SynthTask",
    "TaskDataset",
    "TaskInfo",
    "check_dataset",
    "in_memory",
    "read_split",
    "task_info",
    "write_synthetic_suite",
]
