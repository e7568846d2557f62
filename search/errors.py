class SearchError(RuntimeError):
    """A problem the user can fix (exit code 2): the message says how."""


class TrialsFailed(RuntimeError):
    """Every trial of a search failed (exit code 1): the message gives the first error once."""


def error_summary(error: BaseException | str) -> str:
    """The line(s) that say what went wrong, from a (remote) exception's text: its last exception line onwards."""
    import re

    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    pattern = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|NotFound|Corrupt|Failed)\b:?")
    for i in range(len(lines) - 1, -1, -1):
        if pattern.match(lines[i]):
            return " ".join(lines[i:])[:500]
    return (lines[-1] if lines else type(error).__name__)[:500]
