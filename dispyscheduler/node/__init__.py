"""The node daemon (daemon), its side of each computation (computation) and the program a
computation's processes run (runner)."""
