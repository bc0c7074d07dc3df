"""benchmark-ab for a served model: the load from a process of its own, sweeps, and plots."""
