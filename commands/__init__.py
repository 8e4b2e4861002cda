"""Operations: validate a request, run it against the log or the local processes, report."""
