"""gunicorn settings for the test servers (bind, workers and --preload come from the command)."""

import stats_at_exit  # noqa: F401 - first, so its atexit handler runs after shadowdeco's

worker_class = "sync"
graceful_timeout = 30
loglevel = "info"
accesslog = None
# gunicorn >= 25 opens a control socket in $HOME by default: servers running side by side
# would fight over it.  (Older versions ignore the unknown setting.)
control_socket_disable = True
