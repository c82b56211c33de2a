"""The one exception type for errors a user can cause and fix."""


class CustlensError(Exception):
    """Something the user gave us was wrong: the message says what, where and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
