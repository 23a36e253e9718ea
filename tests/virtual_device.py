"""A second device on a CPU-only machine, for tests of where tensors live.

A test patches the device resolver to return :data:`VIRTUAL` (``torch.device("meta")``) and runs code
inside :func:`virtual_device`. Every ``.to(VIRTUAL)``, ``module.to(VIRTUAL)`` and factory call with
``device=VIRTUAL`` then makes a real CPU tensor (so training runs and gives real numbers) whose storage
is marked *placed*; every result of an operation on placed tensors is placed too, and placed tensors
report ``.device == VIRTUAL``. The rules CUDA enforces are checked on every aten operation:

* no operation mixes placed tensors with host tensors (0-dim host scalars, host index tensors and the
  copies between host and device excepted, as on CUDA);
* no placed tensor is read on the host without a copy (``.numpy()``, ``np.asarray``) or pickled
  (``torch.save``, which would write a checkpoint that a CPU-only machine cannot load);

and :attr:`Placement.host_compute` lists the convolutions and matrix products that ran on host tensors
(work that should have run on the configured device). A missing ``.to(device)`` therefore shows up as
a :class:`Violation` or as host compute, exactly where it would fail or be slow on a GPU; code that
hard-codes the CPU instead of asking for the resolved device does too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

VIRTUAL = torch.device("meta")
_DEVICE_GETTER = torch._C.TensorBase.__dict__["device"]
# Operations that may take host tensors next to device tensors: copies between the two, and (for a
# device tensor) indexing with host indices.
_COPIES = {"copy_", "_to_copy"}
_INDEXING = {"index", "index_put_", "_index_put_impl_"}
# The heavy operations: they should run on the configured device.
_COMPUTE = {"convolution", "convolution_backward", "addmm", "mm", "bmm", "linear", "matmul"}
_HOST_READS = (torch.Tensor.numpy, torch.Tensor.__array__)


class Violation(AssertionError):
    """Code did what a GPU run would refuse (or silently get wrong)."""


class Placement:
    """Which storages are on the virtual device, and what broke the rules."""

    def __init__(self) -> None:
        self._placed: dict[int, StorageWeakRef] = {}
        self.violations: list[str] = []
        self.host_compute: list[str] = []
        self.device_compute = 0
        self.inside_device_call = 0  # > 0 while a Python-level torch call on placed tensors runs

    def is_placed(self, tensor: torch.Tensor) -> bool:
        storage = tensor.untyped_storage()
        ref = self._placed.get(storage._cdata)
        if ref is None:
            return False
        if ref.expired():  # freed; a weak reference keeps the address from being reused meanwhile
            del self._placed[storage._cdata]
            return False
        return True

    def mark(self, tensor: torch.Tensor, placed: bool = True) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if placed:
            self._placed[storage._cdata] = StorageWeakRef(storage)
        else:
            self._placed.pop(storage._cdata, None)
        return tensor

    def fail(self, message: str) -> None:
        self.violations.append(message)
        raise Violation(message)


def _tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts (an operation's arguments or results)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    return [t for item in tree for t in _tensors(item)] if isinstance(tree, list | tuple) else []


class _Operations(TorchDispatchMode):
    """Every aten operation: checks device mixing, propagates placement to new outputs."""

    def __init__(self, placement: Placement) -> None:
        super().__init__()
        self.placement = placement

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        with torch._C.DisableTorchFunction():  # the bookkeeping below need not pass through _Calls
            return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func, args, kwargs):  # type: ignore[no-untyped-def]
        inputs = _tensors((args, kwargs))
        placed = [self.placement.is_placed(t) for t in inputs]
        name = func._schema.name.split("::")[-1]
        indexing_device_tensor = name in _INDEXING and placed[0]
        if any(placed) and name not in _COPIES and not indexing_device_tensor:
            host = [tuple(t.shape) for t, on in zip(inputs, placed) if not on and t.dim() > 0]
            if host:
                self.placement.fail(f"{func} mixes device tensors with host tensors of shapes {host}")
        if name in _COMPUTE:
            if all(placed):
                self.placement.device_compute += 1
            else:
                self.placement.host_compute.append(f"{func} on shapes {[tuple(t.shape) for t in inputs]}")
        out = func(*args, **kwargs)
        if not inputs and self.placement.inside_device_call:  # e.g. the zeros inside F.one_hot(labels)
            for tensor in _tensors(out):
                self.placement.mark(tensor)
        if any(placed) and name != "copy_":  # copy_ returns its (host or device) destination
            storages = {t.untyped_storage()._cdata for t in inputs}
            for tensor in _tensors(out):
                if tensor.untyped_storage()._cdata not in storages:
                    self.placement.mark(tensor)
        return out


class _Calls(TorchFunctionMode):
    """Python-level calls: moves to and from the virtual device, ``.device``, host reads."""

    def __init__(self, placement: Placement) -> None:
        super().__init__()
        self.placement = placement

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        p = self.placement
        if getattr(func, "__self__", None) is _DEVICE_GETTER:
            return VIRTUAL if p.is_placed(args[0]) else torch.device("cpu")
        if func in _HOST_READS and p.is_placed(args[0]):
            p.fail(f"{func.__name__} of a device tensor {tuple(args[0].shape)} without a copy to the host")
        if func in (torch.Tensor.cuda, torch.Tensor.pin_memory):
            p.fail(f"{func.__name__}() under the virtual device: code asked for CUDA, not the resolved device")
        if func is torch.Tensor.cpu:
            return p.mark(args[0].clone(), placed=False) if p.is_placed(args[0]) else func(*args, **kwargs)
        if func is torch.Tensor.to:
            return self._to(func, args, kwargs)
        device = kwargs.get("device")
        if device is not None and torch.device(device) == VIRTUAL:  # a factory asked for the device
            kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            for tensor in _tensors(out):
                p.mark(tensor)
            return out
        on_device = any(p.is_placed(t) for t in _tensors((args, kwargs)))
        if func is torch.Tensor.__deepcopy__:  # copies the storage without an aten operation
            out = func(*args, **kwargs)
            return p.mark(out, placed=on_device)
        # Inside a call on device tensors, tensors that C++ makes from the inputs' options are on the device.
        p.inside_device_call += on_device
        try:
            return func(*args, **kwargs)
        finally:
            p.inside_device_call -= on_device

    def _to(self, func, args, kwargs):  # type: ignore[no-untyped-def]
        p, tensor, rest = self.placement, args[0], args[1:]
        other = rest[0] if rest and isinstance(rest[0], torch.Tensor) else kwargs.get("other")
        if other is not None:  # .to(other): other's device and dtype
            device, dtype = (VIRTUAL if p.is_placed(other) else torch.device("cpu")), other.dtype
        else:
            options = {key: value for key, value in kwargs.items() if key != "copy"}
            device, dtype, _, _ = torch._C._nn._parse_to(*rest, **options)
        if device is None:
            return func(*args, **kwargs)
        if device.type not in ("cpu", VIRTUAL.type):
            p.fail(f".to({device}) under the virtual device: code asked for a device other than the resolved one")
        to_device = device.type == VIRTUAL.type
        if p.is_placed(tensor) == to_device and dtype in (None, tensor.dtype) and not kwargs.get("copy"):
            return tensor
        copied = tensor.to(dtype=dtype, copy=True) if dtype is not None else tensor.clone()
        return p.mark(copied, placed=to_device)


@contextlib.contextmanager
def virtual_device() -> Iterator[Placement]:
    """Run the body with :data:`VIRTUAL` as a second device; yields the :class:`Placement` record."""
    placement = Placement()
    reduce = torch.Tensor._reduce_ex_internal  # pickling (torch.save) reads the storage on the host

    def pickled(tensor: torch.Tensor, proto: int) -> Any:
        if placement.is_placed(tensor):
            placement.fail(f"a device tensor {tuple(tensor.shape)} is pickled (torch.save) without a copy to the host")
        return reduce(tensor, proto)

    with mock.patch.object(torch.Tensor, "_reduce_ex_internal", pickled), _Calls(placement), _Operations(placement):
        yield placement
