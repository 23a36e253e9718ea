"""One local SGD step as pure functions of tensors, for training many clients at once (torch.func).

:func:`clip_gradients` and :func:`sgd_step` compute what ``nn.utils.clip_grad_norm_`` and
``torch.optim.SGD`` (no dampening, no Nesterov; :func:`fedpersonal.training.sgd_optimizer`) do to one
model, with the same operations in the same order, but return new tensors instead of updating in
place, so ``torch.func.vmap`` can map them over stacked per-client parameters. A momentum buffer
starts at zero: ``0 * momentum + d`` is exactly the copy of ``d`` torch makes on the first step.
"""

from __future__ import annotations

import torch

from fedpersonal.training import SGDSettings

Params = dict[str, torch.Tensor]  # parameter name -> tensor (gradients, momentum buffers alike)

CLIP_EPSILON = 1e-6  # nn.utils.clip_grad_norm_'s guard against a zero norm


def clip_gradients(grads: Params, max_norm: float) -> Params:
    """``grads`` rescaled to a global L2 norm of at most ``max_norm``, as ``clip_grad_norm_`` does
    (times ``min(max_norm / (norm + 1e-6), 1)``, also when that is 1); ``grads`` for ``max_norm`` <= 0."""
    if max_norm <= 0:
        return grads
    norms = [torch.linalg.vector_norm(grad, 2) for grad in grads.values()]
    total = torch.linalg.vector_norm(torch.stack(norms), 2)
    scale = torch.clamp(max_norm / (total + CLIP_EPSILON), max=1.0)
    return {key: grad * scale for key, grad in grads.items()}


def sgd_step(params: Params, grads: Params, momenta: Params, settings: SGDSettings) -> tuple[Params, Params]:
    """The parameters and momentum buffers after one step of ``torch.optim.SGD`` with ``settings``
    (``momenta``: the buffers before it, zeros before the first step; returned as given without momentum)."""
    stepped: Params = {}
    buffers: Params = {}
    for key, param in params.items():
        direction = grads[key]
        if settings.weight_decay != 0:
            direction = direction.add(param, alpha=settings.weight_decay)
        if settings.momentum != 0:
            direction = momenta[key].mul(settings.momentum).add(direction)
            buffers[key] = direction
        stepped[key] = param.add(direction, alpha=-settings.lr)
    return stepped, (buffers if settings.momentum != 0 else momenta)
