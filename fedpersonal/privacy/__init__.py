"""Client-level differential privacy: the run-config section ``dp``, the accountant, update clipping.

The server half (Flower's DP strategy wrappers around our strategies) lives in :mod:`strategies.dp`;
the client half of client-side clipping in :mod:`fedpersonal.privacy.clipping`. docs/privacy.md
explains the knobs and what each buys.
"""
