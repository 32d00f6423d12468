"""The daemons' gevent runtime: links that send from the hub, long-lived duties, UDP
discovery, and how a daemon process detaches, logs and locks."""
