"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""

import pickle


class UserError(Exception):
    """Bad input (config, data, weights, command line). The message names the file, key or id."""


class RunFailed(Exception):
    """A run stopped for a reason recorded in its FAILED marker (e.g. a non-finite loss)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was saved and the work stopped; the same command resumes it."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, for a one-line error (its type when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


# What torch.load(weights_only=True) raises on a damaged or foreign file: refused content (UnpicklingError), a
# damaged zip archive (RuntimeError), a file cut short (EOFError), and garbage the unpickler chokes on (IndexError,
# KeyError, UnicodeDecodeError, a ValueError). OSError besides: a missing or unreadable file.
UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, IndexError, KeyError, ValueError)
