"""The one base class for errors in what the user gave us.

A `TalkmotionError` is bad input the user can fix (a file, a setting, a device, a
missing asset); its message names the file or setting and what is wrong. The CLI
prints it as one line and exits with status 2, never a traceback. Each module
defines its own subclass (AudioError, CheckpointError, ...), usually also a
ValueError so library callers can catch either.
"""


class TalkmotionError(Exception):
    """Bad input the user can fix; printed by the CLI as one line, exit status 2."""


class UsageError(TalkmotionError, ValueError):
    """A command-line flag given a value the command cannot use; the message names the flag."""
