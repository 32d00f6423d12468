"""The node daemon (daemon), its computations (workers) and job processes (worker)."""
