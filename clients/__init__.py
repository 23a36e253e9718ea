"""Client halves of the algorithms: subclasses of :class:`clients.base.ClientAlgorithm`.

The algorithm registry (:mod:`simulations.registry`) pairs each with its server half; the
ClientApp (:mod:`simulations.client_app`) dispatches every message to the run's client half.
"""
