"""The one place that imports CrypTen.

``crypten==0.4.1`` (the last release) does not import on torch 2.x as published:

* ``crypten/nn/onnx_converter.py`` does ``from torch.onnx._internal import
  registration``, a private module torch removed. We never use CrypTen's ONNX
  converter (our secure runtime walks our own model definitions op by op), so
  an empty stand-in module with ``registry = None`` is enough for the import.
* Its package metadata asks for ``sklearn`` (a name that refuses to install),
  ``torchvision`` and ``tensorboard``; none is used on our code paths. The
  project installs it with ``pip install --no-deps crypten==0.4.1`` and adds what
  it really imports: ``numpy``, ``omegaconf``, ``pyyaml`` and ``onnx`` (see the
  Makefile and ``requirements.txt``).

Every other module imports CrypTen through here::

    from protocols.crypten_compat import crypten
"""

from __future__ import annotations

import sys
import types

_REGISTRATION = "torch.onnx._internal.registration"


def _install_onnx_registration_stub() -> None:
    """Give ``torch.onnx._internal.registration`` an empty stand-in if torch lacks it."""
    if _REGISTRATION in sys.modules:
        return
    try:
        __import__(_REGISTRATION)
    except ImportError:
        stub = types.ModuleType(_REGISTRATION)
        stub.registry = None  # type: ignore[attr-defined]
        sys.modules[_REGISTRATION] = stub


_install_onnx_registration_stub()

import crypten  # noqa: E402  (must follow the stub)
import crypten.communicator  # noqa: E402,F401
import crypten.mpc  # noqa: E402,F401

__all__ = ["crypten"]
