"""What the client shares with the daemons: frames and messages, links, authentication,
TLS, files and pickling. No gevent here: in the daemons these run under gevent's
monkey-patching, in a user's program on plain threads."""
