"""User-facing errors.

Anything raised as a [`VpromptError`][vprompt.VpromptError] is a problem with the user's input (a
file, a flag, a checkpoint), not a bug: the CLI prints its message as one line and exits with
status 2 instead of showing a traceback.
"""


class VpromptError(Exception):
    """Base class of every error whose message is meant for the user."""


class DataError(VpromptError):
    """A dataset folder, split file or image is missing, malformed or unreadable."""


class CheckpointError(VpromptError):
    """A prompt checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


class ConfigError(VpromptError):
    """A method, backbone or training option is unknown or inconsistent."""


class NonFiniteLossError(VpromptError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class VpromptWarning(UserWarning):
    """A setting that is allowed but probably not meant (the CLI prints it as one ``warning:`` line)."""


class VpromptNotice(UserWarning):
    """Something worth knowing that is not a problem (the CLI prints it as one ``note:`` line): where
    a shared prompt's backbone comes from."""
