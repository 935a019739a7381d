"""``--data SPEC`` → a ``TaskSource``, whatever the format.

Spellings:
  PATH                        a task folder in the VTAB-1k file-list layout (the default)
  fgvc:PATH, fgvc:NAME:PATH   an FGVC folder with VPT's json splits (NAME: cub, nabirds, flowers, dogs, cars)
  torchvision:NAME:ROOT       a torchvision dataset on disk (``tv:`` for short); fetched only with download
  imagefolder:PATH            a folder of class sub-folders of images (optionally under train/ val/ test/);
                              a PATH that is clearly one is read as one without the prefix
  hf:PATH_OR_NAME[:CONFIG]    a Hugging Face dataset: save_to_disk folder, parquet/arrow files, or cached
                              ORG/NAME; ``,image=COLUMN`` / ``,label=COLUMN`` name its columns
"""

from __future__ import annotations

from pathlib import Path

from vprompt.errors import DataError

from .fgvc import FGVC_TASKS, fgvc_source
from .filelist import FileListDataset, task_info
from .huggingface import hf_source
from .imagefolder import imagefolder_source, is_image_folder
from .source import VTAB_PROTOCOL, TaskSource
from .torchvision_sets import torchvision_source


def vtab_source(task_dir: Path | str, check_sizes: bool = True) -> TaskSource:
    """A VTAB-1k-layout task folder; ``check_sizes`` enforces the split sizes (off to score a
    prompt on a folder of another size)."""
    info = task_info(task_dir)

    def open_split(split: str, size: tuple[int, int], train: bool) -> FileListDataset:
        return FileListDataset(info.root, split, size, check_size=check_sizes)

    return TaskSource(info=info, kind="vtab-filelist", image_source=f"JPEG file lists in {info.root}",
                      splits=("train800", "val200", "train800val200", "test"), protocol=VTAB_PROTOCOL,
                      open_split=open_split)


def open_task(spec: Path | str, download: bool = False, check_sizes: bool = True) -> TaskSource:
    """The task ``spec`` names (see the module docstring); a malformed spec is a DataError."""
    text = str(spec)
    kind, _, rest = text.partition(":")
    if kind == "fgvc":
        name, _, path = rest.partition(":")
        if path and name.lower() in FGVC_TASKS:
            return fgvc_source(path, name)
        return fgvc_source(rest)
    if kind in ("torchvision", "tv"):
        name, _, root = rest.partition(":")
        if not name or not root:
            raise DataError(f"expected torchvision:NAME:ROOT, got {text!r}")
        return torchvision_source(name, root, download)
    if kind == "hf":
        return hf_source(rest, download)
    if kind == "imagefolder":
        return imagefolder_source(rest)
    if is_image_folder(Path(text)):
        return imagefolder_source(text)
    return vtab_source(text, check_sizes)

