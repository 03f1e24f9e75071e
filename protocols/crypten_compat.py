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

* Its randomness is torch's Mersenne Twister: ``crypten.common.rng`` draws
  every random ring element with ``torch.randint(generator=...)`` and
  ``crypten._setup_prng`` makes the pairwise ("prev"/"next") generators behind
  pseudo-random zero sharing, the "local" and the "global" one as
  ``torch.Generator`` with 64-bit seeds (of which ``manual_seed`` keeps 32
  bits). From a few hundred outputs the state and the seed fall out, and
  those outputs reach the peer in openings. :func:`_secure_randomness`
  replaces, in every CrypTen module that imported them, the two draw
  functions with ones that read the project's AES-256-CTR PRG
  (``mpcvit.prg.PRG``) and *refuse* a ``torch.Generator``, and replaces
  ``_setup_prng`` with one that gives each generator slot a PRG: the
  "next" key (256 bits from the OS) goes to the next party over the
  communicator (the mutually authenticated TLS channel in a deployment),
  whose "prev" it becomes; "global" is broadcast by party 0; "local" never
  leaves the process. Until ``_setup_prng`` runs, "local" draws come from
  a process-local PRG.

* CrypTen's generator *API* still works on those slots: each holds a
  :class:`GeneratorSlot`, a PRG (what every mask is read from) that also
  carries a *training stream*, a ``torch.Generator`` that is public by
  design and never reaches a draw function. ``manual_seed``,
  ``initial_seed`` and ``seed`` act on the training stream only, so
  ``crypten.manual_seed`` (debug mode, as in CrypTen) makes training-time
  dropout reproducible and never makes a mask predictable: the AES-CTR
  streams keep their keys from the OS. CrypTen's autograd dropout
  (``crypten.gradients``: ``dropout`` / ``_feature_dropout`` of a tensor that
  requires grad, which ``crypten.nn.Dropout`` in training runs) draws its
  public keep-mask from the "global" slot's training stream, the same on
  every party, as CrypTen draws it from its "global" ``torch.Generator``.

* Its communicator and its generator slots are process-wide, which would let
  two secure forwards in one process (a party serving several sessions, one
  thread each) send on each other's channel or draw each other's zero-sharing
  keys. :func:`thread_communicator` gives the calling thread its own:
  ``crypten.communicator.get()`` and ``is_initialized()`` answer the thread's
  innermost communicator (CrypTen's own otherwise), and ``crypten.generators``
  reads and writes the thread's own slots (so ``_setup_prng`` keys them for
  that thread alone). A thread that set nothing sees the process-wide state,
  as before. (The dealer provider keeps its batch per thread itself:
  ``protocols.providers.DealerProvider``.)

* Every attribute read of a CrypTensor passes through CrypTen's debug hook,
  which reads ``cfg.debug.validation_mode`` from its OmegaConf config each
  time: a fifth of a party's CPU per forward. :func:`_fast_attribute_access`
  takes the hook off (the project never runs CrypTen's validation mode).

Every other module imports CrypTen through here::

    from protocols.crypten_compat import crypten
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator, MutableMapping
from typing import Any

import torch

from mpcvit.prg import KEY_BYTES, PRG, derive_key, new_key

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

_RNG_MODULES = (
    "crypten.common.rng",
    "crypten.mpc.primitives.arithmetic",
    "crypten.mpc.primitives.binary",
    "crypten.mpc.provider.tfp_provider",
    "crypten.mpc.provider.ttp_provider",
)
_process_prg: list = []


def _prg_for(generator):  # noqa: ANN001, ANN202 - CrypTen passes a generator or None
    """The PRG a CrypTen draw reads: the one given, else the "local" slot (a process PRG before set-up)."""
    if isinstance(generator, PRG):
        return generator
    if generator is not None:
        raise TypeError(f"CrypTen was handed a {type(generator).__name__}; masks come only from mpcvit.prg.PRG")
    local = crypten.generators["local"].get(torch.device("cpu"))
    if isinstance(local, PRG):
        return local
    if not _process_prg or _process_prg[0][0] != os.getpid():  # a forked child never shares its parent's stream
        _process_prg[:] = [(os.getpid(), PRG.fresh())]
    return _process_prg[0][1]


def _check_ring_draw(size, kwargs):  # noqa: ANN001, ANN202
    device = kwargs.get("device")
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError("the secure runtime draws randomness on the CPU only")
    return size if isinstance(size, (tuple, list, torch.Size)) else (size,)


def generate_random_ring_element(size, ring_size=(2**64), generator=None, **kwargs):  # noqa: ANN001, ANN201
    """Uniform elements of Z_2^64 from the project's PRG (CrypTen's signature)."""
    if ring_size != 2**64:
        raise ValueError("only the 64-bit ring is supported")
    return _prg_for(generator).ring(_check_ring_draw(size, kwargs))


def generate_kbit_random_tensor(size, bitlength=None, generator=None, **kwargs):  # noqa: ANN001, ANN201
    """Uniform k-bit values from the project's PRG (CrypTen's signature)."""
    return _prg_for(generator).bits(_check_ring_draw(size, kwargs), bitlength)


_TRAINING_LABEL = "mpcvit/crypten-slot/training-stream"


class GeneratorSlot(PRG):
    """What a CrypTen generator slot holds: a :class:`PRG` plus CrypTen's ``torch.Generator`` seeding API.

    Every draw of :func:`generate_random_ring_element` / :func:`generate_kbit_random_tensor` from a slot
    reads the PRG's AES-CTR stream, under the key the slot was made with; nothing here changes that key
    or that stream. :attr:`training` is a separate ``torch.Generator`` (Mersenne Twister: predictable
    from its outputs) for *public* training-time randomness only, CrypTen's dropout keep-masks, which
    every party draws alike and multiplies into its share in the clear. Its seed starts as 64 bits of
    ``HMAC-SHA256(key, label)`` (a PRF: the seed, which the stream's outputs reveal, tells nothing about
    the key), so the two holders of a shared slot ("global", "prev"/"next") have the same training
    stream and the "local" slot's is unknown to the peer. The ``torch.Generator`` is made on first use
    only: a secure forward never makes one.

    * ``manual_seed(seed)`` restarts the training stream from ``seed`` (what ``crypten.manual_seed`` calls,
      in CrypTen's debug mode); returns the slot. Masks stay as unpredictable as before.
    * ``initial_seed()`` is the training stream's seed (as ``torch.Generator.initial_seed``: unsigned).
    * ``seed()`` re-seeds the training stream non-deterministically and returns the seed.
    """

    __slots__ = ("_training", "_training_seed")

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self._training: torch.Generator | None = None
        self._training_seed = int.from_bytes(derive_key(key, _TRAINING_LABEL)[:8], "little")

    @property
    def training(self) -> torch.Generator:
        """The public training stream (made, from its seed, on first use)."""
        if self._training is None:
            self._training = torch.Generator(device="cpu")
            self._training.manual_seed(self._training_seed)
        return self._training

    def manual_seed(self, seed: int) -> "GeneratorSlot":
        seed = int(seed)
        if not -(2**63) <= seed < 2**64:
            raise RuntimeError(f"a seed is in [-2**63, 2**64), got {seed}")  # what torch.Generator.manual_seed refuses
        self._training, self._training_seed = None, seed % 2**64
        return self

    def initial_seed(self) -> int:
        return self._training_seed

    def seed(self) -> int:
        self._training_seed = self.training.seed()
        return self._training_seed


def training_generator(slot: str = "global", device: Any = "cpu") -> torch.Generator:
    """The public training stream of the calling thread's CrypTen slot (see :class:`GeneratorSlot`)."""
    held = crypten.generators[slot].get(torch.device(device))
    if not isinstance(held, GeneratorSlot):
        raise RuntimeError(f"CrypTen's {slot!r} generator is not set up in this thread (crypten.init() or parties.communicator.installed)")
    return held.training


def _setup_prng() -> None:
    """CrypTen's generator slots as PRGs under fresh 256-bit keys (see the module docstring)."""
    comm = crypten.communicator.get()
    world, rank = comm.get_world_size(), comm.get_rank()
    next_key = new_key()
    words = KEY_BYTES // 8
    prev_key = next_key
    if world >= 2:
        outgoing = torch.frombuffer(bytearray(next_key), dtype=torch.int64).clone()
        incoming = torch.zeros(words, dtype=torch.int64)
        sent = comm.isend(outgoing, (rank + 1) % world)
        received = comm.irecv(incoming, src=(rank - 1) % world)
        sent.wait()
        received.wait()
        prev_key = incoming.numpy().tobytes()
    global_words = torch.frombuffer(bytearray(new_key()), dtype=torch.int64).clone()
    global_key = comm.broadcast(global_words, 0).numpy().tobytes() if world >= 2 else global_words.numpy().tobytes()
    cpu = torch.device("cpu")
    crypten.generators["prev"][cpu] = GeneratorSlot(prev_key)
    crypten.generators["next"][cpu] = GeneratorSlot(next_key)
    crypten.generators["local"][cpu] = GeneratorSlot(new_key())
    crypten.generators["global"][cpu] = GeneratorSlot(global_key)


# -- CrypTen's autograd dropout, its keep-mask from the "global" training stream ----------------------------
# (crypten/gradients.py's two forwards, with ``training_generator("global", ...)`` where they read
# ``crypten.generators["global"]``: a slot is no torch.Generator, so torch.rand would refuse it)


def _dropout_forward(ctx, input, p=0.5, training=True, inplace=False):  # noqa: ANN001, ANN202, A002 - CrypTen's signature
    if training and inplace:
        logging.warning("CrypTen dropout does not support inplace computation during training.")
    if not training:
        return input if inplace else input.clone()
    random_tensor = torch.rand(input.size(), generator=training_generator("global", input.device), device=input.device)
    boolean_mask = (random_tensor > p).to(input.device, dtype=torch.float)
    result = input.mul_(boolean_mask.div(1.0 - p)) if inplace else input.mul(boolean_mask.div(1.0 - p))
    ctx.save_multiple_for_backward([boolean_mask, p])
    return result


def _feature_dropout_forward(ctx, input, p=0.5, training=True, inplace=False):  # noqa: ANN001, ANN202, A002
    if training and inplace:
        logging.warning("CrypTen _feature_dropout does not support inplace computation during training.")
    if not training:
        return input if inplace else input.clone()
    feature_dropout_size = input.size()[0:2]
    random_tensor = torch.rand(feature_dropout_size, generator=training_generator("global", input.device))
    boolean_mask = (random_tensor > p).to(dtype=torch.float)
    for i in range(2, input.dim()):
        boolean_mask = boolean_mask.unsqueeze(i)
    boolean_mask, _ = torch.broadcast_tensors(boolean_mask, input.data)
    result = input.mul_(boolean_mask.div(1.0 - p)) if inplace else input.mul(boolean_mask.div(1.0 - p))
    ctx.save_multiple_for_backward([boolean_mask, p])
    return result


def _secure_randomness() -> None:
    """Point CrypTen's draws and generator set-up at the project's PRG (idempotent)."""
    for name in _RNG_MODULES:
        module = importlib.import_module(name)
        for fn in (generate_random_ring_element, generate_kbit_random_tensor):
            if hasattr(module, fn.__name__):
                setattr(module, fn.__name__, fn)
    crypten._setup_prng = _setup_prng
    import crypten.gradients as gradients

    gradients.AutogradDropout.forward = staticmethod(_dropout_forward)
    gradients.AutogradFeatureDropout.forward = staticmethod(_feature_dropout_forward)


_secure_randomness()


# -- per-thread state (see the module docstring) -----------------------------------

_thread = threading.local()
_crypten_get = crypten.communicator.get
_crypten_is_initialized = crypten.communicator.is_initialized
_process_generators: dict = crypten.generators


class _ThreadGenerators(MutableMapping):
    """``crypten.generators``: the calling thread's slots inside :func:`thread_communicator`, the process's outside."""

    @staticmethod
    def _target() -> dict:
        own = getattr(_thread, "generators", None)
        return own if own is not None else _process_generators

    def __getitem__(self, key: str) -> dict:
        return self._target()[key]

    def __setitem__(self, key: str, value: dict) -> None:
        self._target()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._target())

    def __len__(self) -> int:
        return len(self._target())


def current_communicator() -> Any:
    """The calling thread's innermost communicator from :func:`thread_communicator`, else None."""
    stack = getattr(_thread, "comms", None)
    return stack[-1] if stack else None


def _get() -> Any:
    own = current_communicator()
    return own if own is not None else _crypten_get()


def _is_initialized() -> bool:
    return current_communicator() is not None or _crypten_is_initialized()


@contextlib.contextmanager
def thread_communicator(comm: Any, own_generators: bool = False) -> Iterator[Any]:
    """Inside the block, this thread's CrypTen talks over ``comm``; other threads are not affected.

    With ``own_generators`` the thread also gets empty generator slots of its
    own (fill them with ``crypten._setup_prng()``), dropped at the end: keys
    agreed for one session never serve another.
    """
    stack = _thread.__dict__.setdefault("comms", [])
    saved = getattr(_thread, "generators", None)
    stack.append(comm)
    if own_generators:
        _thread.generators = {slot: {} for slot in _process_generators}
    try:
        yield comm
    finally:
        stack.pop()
        if own_generators:
            _thread.generators = saved


crypten.communicator.get = _get
crypten.communicator.is_initialized = _is_initialized
crypten.generators = _ThreadGenerators()


def _fast_attribute_access() -> None:
    """Every attribute read of a CrypTensor goes through a debug hook that looks up
    ``cfg.debug.validation_mode`` in CrypTen's OmegaConf config (some 80 microseconds each, thousands of
    reads per forward: a fifth of a party's CPU on a ViT). The project never turns that validation
    mode on (it re-runs every op in plaintext), so the hook is taken off: the lookup is CrypTen's own
    ``__getattribute__`` without its wrapper. Setting the mode later has no effect, and says so."""
    from crypten.cryptensor import CrypTensor

    getter = CrypTensor.__dict__["__getattribute__"]
    inner = getattr(getter, "__wrapped__", None)
    if inner is not None:
        CrypTensor.__getattribute__ = inner  # type: ignore[method-assign]
    if crypten.cfg.debug.validation_mode:
        logging.getLogger(__name__).warning("CrypTen's debug validation mode is not supported here; it is ignored")


_fast_attribute_access()

__all__ = ["GeneratorSlot", "crypten", "current_communicator", "generate_kbit_random_tensor", "generate_random_ring_element",
           "thread_communicator", "training_generator"]
