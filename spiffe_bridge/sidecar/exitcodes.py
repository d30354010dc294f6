"""The sidecar's documented exit codes (a module of their own so one-shot mode imports nothing else)."""

EXIT_OK = 0  # one-shot: files written; daemon: stopped by SIGTERM/SIGINT
EXIT_FAILURE = 1  # daemon: a stream failed for good, or the health port could not be bound
EXIT_CONFIG = 2  # configuration error
EXIT_UNAVAILABLE = 3  # one-shot: agent unavailable until the deadline
EXIT_NO_IDENTITY = 4  # one-shot: no identity issued until the deadline
EXIT_WRITE = 5  # one-shot: files could not be written
