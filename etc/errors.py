"""User-facing errors. The CLI prints them as one line and exits with their code; nothing else is caught."""

from __future__ import annotations


class EtcError(Exception):
    """A problem the user can act on: names the file/node/pass and what to do. Exit code 2."""

    exit_code = 2


class BadModelError(EtcError):
    """The input model cannot be read or is outside what ETC supports."""


class UnknownPassError(EtcError):
    """A pass name in a pipeline string is not registered."""


class EquivalenceError(EtcError):
    """A pass changed the model's outputs beyond tolerance. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str, pass_name: str | None = None, max_abs: float | None = None):
        super().__init__(message)
        self.pass_name = pass_name
        self.max_abs = max_abs


class OscillationError(EtcError):
    """The pipeline revisited a model it had already produced: two passes undo each other."""


class PassContractError(EtcError):
    """A pass broke the contract of Pass.run (a bug in that pass, named in the message)."""


class UnrunnableModelError(BadModelError):
    """onnxruntime itself cannot run the input model at the sizes ETC checks (and at no size ETC can find)."""


class LimitWarning(UserWarning):
    """A sweep/round limit or the cost budget stopped or overruled the compiler (never a silent stop); the run
    also keeps it in its notes, which the commands print."""
