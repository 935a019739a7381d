"""The 19 VTAB-1k tasks as commonly distributed in the JPEG file-list layout (VPT / NOAH export).

Folder names, groups, class counts and test-split sizes are the ones of that export (the test
sizes are those in VPT's appendix table of dataset statistics). Knowing them lets the loader and
``vprompt data check`` assert the exact sizes per task: a test split that is short by a few
hundred images is the most common way a hand-prepared VTAB folder silently differs from
everyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VTABTask:
    """What a correctly prepared VTAB-1k task folder holds."""

    folder: str
    group: str
    num_classes: int
    test_size: int


VTAB_TASKS: dict[str, VTABTask] = {task.folder: task for task in (
    VTABTask("cifar", "natural", 100, 10_000),
    VTABTask("caltech101", "natural", 102, 6_084),
    VTABTask("dtd", "natural", 47, 1_880),
    VTABTask("oxford_flowers102", "natural", 102, 6_149),
    VTABTask("oxford_iiit_pet", "natural", 37, 3_669),
    VTABTask("svhn", "natural", 10, 26_032),
    VTABTask("sun397", "natural", 397, 21_750),
    VTABTask("patch_camelyon", "specialized", 2, 32_768),
    VTABTask("eurosat", "specialized", 10, 5_400),
    VTABTask("resisc45", "specialized", 45, 6_300),
    VTABTask("diabetic_retinopathy", "specialized", 5, 42_670),
    VTABTask("clevr_count", "structured", 8, 15_000),
    VTABTask("clevr_dist", "structured", 6, 15_000),
    VTABTask("dmlab", "structured", 6, 22_735),
    VTABTask("kitti", "structured", 4, 711),
    VTABTask("dsprites_loc", "structured", 16, 73_728),
    VTABTask("dsprites_ori", "structured", 16, 73_728),
    VTABTask("smallnorb_azi", "structured", 18, 12_150),
    VTABTask("smallnorb_ele", "structured", 9, 12_150),
)}

# Accepted spellings of folder names in other exports, mapped to the names above.
ALIASES: dict[str, str] = {
    "cifar100": "cifar", "cifar_100": "cifar", "oxford_pet": "oxford_iiit_pet",
    "flowers102": "oxford_flowers102", "retinopathy": "diabetic_retinopathy",
    "clevr_distance": "clevr_dist", "kitti_dist": "kitti", "dsprites_location": "dsprites_loc",
    "dsprites_orientation": "dsprites_ori", "smallnorb_azimuth": "smallnorb_azi",
    "smallnorb_elevation": "smallnorb_ele", "camelyon": "patch_camelyon",
}


def vtab_task(folder_name: str) -> VTABTask | None:
    """The VTAB-1k task a folder name denotes (None for any other task folder)."""
    name = folder_name.lower()
    return VTAB_TASKS.get(ALIASES.get(name, name))
