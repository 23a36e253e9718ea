"""Training objectives beyond a task's plain loss (margin softmaxes, FedFR's terms)."""
