"""The one place where a failure becomes what the user reads.

Our own errors ([`VpromptError`][vprompt.VpromptError]) and the failures of the outside world that
a user can fix (the Hub not reachable, a full disk, no GPU, too little memory, a command line tyro
could not parse) become one ``error:`` line; the CLI exits with status 2. Anything else is a bug
in vprompt, and says so.
"""

from __future__ import annotations

import errno
import re

from vprompt.errors import VpromptError

BUG_REPORT = ("this is a bug in vprompt, not in your input: please report it with the command line and the "
              "traceback above")


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on, or None for a bug."""
    if isinstance(exc, VpromptError):
        return message_line(exc)
    module = type(exc).__module__.split(".")[0]
    if module == "huggingface_hub":
        return (f"the Hugging Face Hub could not provide a file ({one_line(exc)}); without the network, fill the "
                "Hub cache on a machine that has it (HF_HOME or HF_HUB_CACHE point at it), or pass local weights "
                "with --weights")
    if module == "ray":
        return f"Ray failed: {one_line(exc)}; --ray none runs without Ray"
    if is_out_of_memory(exc):
        return "out of memory; try a smaller --batch-size"
    if isinstance(exc, OSError):
        return os_error_message(exc)
    if is_cuda_unavailable(exc):
        return "a CUDA device was asked for, but torch sees no usable CUDA GPU here; use the CPU (--device cpu)"
    return None


def message_line(exc: BaseException) -> str:
    """The message in one line; from a DataLoader worker, which re-raises an error of its process
    as traceback text, only the last line, without its ``module.Class:`` prefix."""
    text = str(exc).strip()
    if "Traceback (most recent call last)" not in text:
        return one_line(exc, limit=600)
    return text.splitlines()[-1].split(f"{type(exc).__module__}.{type(exc).__name__}: ", 1)[-1]


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library's multi-line message folded into one line of at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return (text[:limit] + "…") if len(text) > limit else text or type(exc).__name__


def os_error_message(exc: OSError) -> str:
    """Disk full, permissions, a missing folder: the OS's words and the path they concern."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or message_line(exc)).lower()
    return f"{reason}: {exc.filename}" if exc.filename else reason


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def is_cuda_unavailable(exc: BaseException) -> bool:
    """torch's errors when CUDA is used on a machine (or a torch build) without it."""
    if not isinstance(exc, (AssertionError, RuntimeError)) or "CUDA" not in str(exc):
        return False
    import torch

    return not torch.cuda.is_available()


BOX_EDGES = re.compile(r"^[│╭╰]\s?|\s?[│╮╯]$")
LEFT_OUT = ("For full helptext", "Argument helptext")
HELP_COMMAND = re.compile(r"vprompt(?: [a-z][\w-]*)* --help")


def parse_error_line(rendered: str) -> str:
    """tyro's parse error (a box of sections, drawn in UTF-8 or in ASCII by the output's encoding)
    as one line: its sections without the help text, and lists of options by their names only."""
    lines = rendered.strip("\n").splitlines()
    boxed = bool(lines) and "╭" in lines[0]
    body = [BOX_EDGES.sub("", line.rstrip()) for line in (lines[1:-1] if boxed else lines[1:])]
    sections: list[list[str]] = [[]]
    for line in body:
        if is_rule(line):
            sections.append([])
        elif line.strip():
            sections[-1].append(line.rstrip())
    parts = [section_text(section) for section in sections if section and not section[0].strip().startswith(LEFT_OUT)]
    helps = HELP_COMMAND.findall(" ".join(body))
    hint = f" (see {helps[-1]})" if helps else ""
    return ("; ".join(parts) or "could not parse the command line") + hint


def is_rule(line: str) -> bool:
    text = line.strip()
    return len(text) > 3 and set(text) <= {"─", "-"}


def section_text(section: list[str]) -> str:
    """One section of tyro's box as a phrase. A heading with indented items keeps each item's line
    ("--quick (applied to vprompt reproduce)"), or its first word where the item's next lines are
    its help ("Missing from vprompt train:", "Perhaps you meant:"); text at the heading's own
    indentation after the items is a sentence of its own, kept whole."""
    head = section[0]
    items = list(section[1:])
    after = []
    while items and indentation(items[-1]) <= indentation(head):  # trailing text at the heading's level
        after.insert(0, items.pop())
    if not (head.strip().endswith(":") and items):
        return " ".join(line.strip() for line in section)
    indent = min(map(indentation, items))
    tops = [line.strip() for line in items if indentation(line) == indent]
    helped = len(tops) < len(items)  # deeper lines under the items: their help, left out
    names = [top.split()[0] if helped else top for top in tops]
    head = head.strip()
    text = (f"{head.removeprefix('Missing from ').rstrip(':')} needs {', '.join(names)}"
            if head.startswith("Missing from ") else f"{head} {', '.join(names)}")
    return text + (f" ({' '.join(line.strip() for line in after)})" if after else "")


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip())
