"""Server halves of the algorithms: Flower strategies, each usable in any Flower ServerApp.

The algorithm registry (:mod:`simulations.registry`) pairs each with its client half and builds
it from a run config; nothing here reads a run config.
"""
