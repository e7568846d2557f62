class SearchError(RuntimeError):
    """A problem the user can fix (exit code 2): the message says how."""
