"""Starting and stopping the daemon: the directories it needs, the pidfile that owns
the socket, the lock that owns the data dir, and serving until told to stop."""
