"""The one exception type users see: a message that says what was got, what was expected, and how to fix it."""


class CareError(ValueError):
    """Bad input or a request that cannot be honoured.

    The message is one line, names the file (when there is one) and the problem. The CLI prints it
    without a traceback and exits with status 2; the app shows it next to the step.
    """


class CareWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. an image unlike the training
    images). The CLI prints it as ``carecore: warning: ...``; the app shows it with the result."""
