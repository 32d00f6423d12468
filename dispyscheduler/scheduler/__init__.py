"""The scheduler daemon: state and policy (model, policy) apart from I/O (server)."""
