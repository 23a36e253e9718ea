"""Client-level differential privacy: the run-config section ``dp``, the accountant, update clipping.

The server half (Flower's DP strategy wrappers around our strategies) lives in :mod:`strategies.dp`;
the client half of client-side clipping in :mod:`fedpersonal.privacy.clipping`. Secure aggregation
(Flower's SecAgg+, section ``secagg``): :mod:`fedpersonal.privacy.secagg`, wired in
:mod:`simulations.secagg`. docs/privacy.md explains the knobs and what each buys.
"""
