"""The client SDK: classify an image privately through the REST coordinator.

One private inference, as the client sees it (DESIGN.md, "One private inference"):

1. ``GET /v1/models`` gives the model's input shape ``(C, H, W)``, its class
   names and the fixed-point precision ``f`` the parties expect;
   ``GET /v1/parties/keys`` gives each party's long-term X25519 public key
   with the party's certificate and signature over it. The client checks
   them before it seals anything (see "Trust" below).
2. The image is converted to grayscale or RGB, resized to ``(H, W)`` and scaled
   to ``[0, 1]`` (the secure runtime folds the input normalisation into the
   patch embedding, so no mean/std is applied here), encoded in fixed point
   ``e = round(x * 2^f)`` and split into two additive shares on Z_2^64:
   ``e = s0 + s1 (mod 2^64)`` with ``s0`` uniform.
3. A one-time X25519 key pair ``(sk_c, pk_c)`` is made; share ``s_i`` is sealed
   to party ``i`` (``mpcvit.sealing``), bound to the request id, the model,
   the rank ``i`` and the input direction, and both sealed shares plus
   ``pk_c`` are POSTed to ``/v1/classify``.
4. The reply carries each party's sealed share of the fixed-point logits; the
   client opens both with ``sk_c`` and adds them: ``logits = (y0 + y1) / 2^f``.
   Under the model owner's ``label`` or ``topk:K`` output policy
   (``mpcvit.output_policy``, shown by ``/v1/models`` and in every answer)
   the shares are of the class indices instead, ring integers: ``idx = y0 + y1``
   (:func:`open_indices`); the :class:`Result` then has the class (and
   ``top_k``) but no logits or probabilities.

The coordinator relays sealed boxes only: it never sees the image or the
logits. Trust: the party keys come through the coordinator, so the client
never takes them on its word. It checks each key against the deployment's CA
certificate (``ca=``: the key is signed by a certificate that the CA issued
for role ``party<i>``, ``mpcvit.pki.verify_party_key``), or against pinned
SHA-256 fingerprints (``pins=``), or uses keys it was given (``party_keys=``),
and otherwise refuses (:class:`mpcvit.pki.PartyKeyError`) before it sends
anything. ``trust_coordinator=True`` skips the check and is accepted only for
a coordinator on a loopback address (the local demo without TLS).

Integrity net: an answer computed on material that the two parties did not
share (a fault no other check caught) decodes to logits spread over the whole
fixed-point range, about +-2^47. :func:`open_output` refuses logits beyond
``PLAUSIBLE_LOGIT`` (2^20, far above any trained classifier's logits and the
measured ranges of ``benchmarks/numeric_safety.py``) with
:class:`ImplausibleOutput`: a garbage answer passes only if every logit lands
within +-2^20 by chance, about 2^-27 per logit. It costs one comparison per
logit on the client, nothing online. :meth:`PrivateClient.classify` asks once
more with a freshly sealed request when it happens, and counts it
(``PrivateClient.implausible``).

Retries: ``classify`` sends the same sealed request again, after the
answer's Retry-After, when the coordinator answers 503 (queue full, a party
or the dealer unavailable, mismatched material): safe, because a party
records a request as used only once it has computed its answer, and refuses
it after that (409), so a box is answered at most once. It never retries a
409, a 4xx or a 504, and retries at most ``retries`` times within the
request's deadline. One exception: when its own re-send after a 503 meets a
409 (one party had computed the box before its peer failed, and that answer
never arrived), it seals the image afresh once (a new request id and key)
and asks again.

The same functions serve the coordinator's demo mode, where it plays this
client itself (and says so in its response).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mpcvit.output_policy import OutputPolicy, PolicyError
from mpcvit.pki import PartyKeyError, PartyKeyProof, check_pinned, is_loopback, verify_party_key
from mpcvit.sealing import BoxContext, KeyPair, Sealed, generate_keypair, open_tensor, reconstruct_fixed_point, seal_tensor, share_fixed_point

log = logging.getLogger(__name__)

DEFAULT_PRECISION_BITS = 16
PLAUSIBLE_LOGIT = float(2**20)  # beyond it an opened logit is garbage (module docstring, "Integrity net")
DEFAULT_RETRIES = 2
MAX_IMAGE_PIXELS = 4096 * 4096
ImageLike = str | Path | bytes | Image.Image | np.ndarray | torch.Tensor


class ImageError(ValueError):
    """The input is not an image this model can take."""


class ImplausibleOutput(RuntimeError):
    """The opened logits are outside any plausible range: the parties computed on material that did not match."""


class ServerError(RuntimeError):
    """The coordinator answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"coordinator answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


# -- preprocessing -------------------------------------------------------------


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode PNG/JPEG/... bytes into a PIL image; ``ImageError`` if they are not an image or too large."""
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(f"image is {width}x{height}, more than {max_pixels} pixels")
        img.load()
    except UnidentifiedImageError as exc:  # its message holds the repr of a buffer object: say it without
        raise ImageError("not a readable image: the bytes are not PNG, JPEG or another format Pillow reads") from exc
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageError(f"not a readable image: {exc}") from exc
    return img


def _pil_to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    mode = "L" if channels == 1 else "RGB"
    arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]  # (1, H, W)
    else:
        arr = arr.transpose(2, 0, 1)  # (3, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _array_to_tensor(arr: np.ndarray | torch.Tensor, channels: int) -> torch.Tensor:
    """An array in [0, 1]: (H, W), (H, W, C) or (C, H, W) with C in {1, 3} -> (C', H, W)."""
    x = torch.as_tensor(np.asarray(arr, dtype=np.float32) if isinstance(arr, np.ndarray) else arr).float()
    if not torch.isfinite(x).all():
        raise ImageError("pixel values must be finite")
    if x.numel() == 0 or x.min() < 0 or x.max() > 1:
        raise ImageError("pixel values must lie in [0, 1]")
    if x.dim() == 2:
        x = x[None]
    elif x.dim() == 3 and x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)  # HWC -> CHW
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ImageError(f"pixel array must be (H, W), (H, W, C) or (C, H, W) with C in (1, 3); got {tuple(x.shape)}")
    if x.shape[0] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    elif x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (C, H, W): box average when shrinking (exact for integer factors), bilinear otherwise."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    shrink = x.shape[-2] >= height and x.shape[-1] >= width
    y = F.interpolate(x[None], size=(height, width), mode="area" if shrink else "bilinear", **({} if shrink else {"align_corners": False}))
    return y[0].clamp(0, 1)


def preprocess(image: ImageLike, input_shape: tuple[int, int, int] | list[int]) -> torch.Tensor:
    """Any image -> the raw model input: float tensor (C, H, W) in [0, 1].

    Accepts a path, encoded image bytes, a PIL image, or an array in [0, 1]
    shaped (H, W), (H, W, C) or (C, H, W).
    """
    C, H, W = (int(s) for s in input_shape)
    if C not in (1, 3):
        raise ImageError(f"models with {C} input channels are not supported (1 or 3)")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        image = path.read_bytes()
    if isinstance(image, bytes):
        image = decode_image(image)
    x = _pil_to_tensor(image, C) if isinstance(image, Image.Image) else _array_to_tensor(image, C)
    return _resize(x, H, W)


# -- sealing a request and opening its answer ----------------------------------


@dataclass(frozen=True)
class SealedRequest:
    """What the client sends, plus the one-time key it keeps to open the answer."""

    request_id: str
    keypair: KeyPair
    shares: tuple[Sealed, Sealed]  # share i sealed to party i
    model: str


def new_request_id() -> str:
    return uuid.uuid4().hex


def seal_input(
    x: torch.Tensor,
    party_keys: list[bytes] | tuple[bytes, ...],
    precision_bits: int = DEFAULT_PRECISION_BITS,
    request_id: str | None = None,
    *,
    model: str,
) -> SealedRequest:
    """Encode ``x`` in fixed point, split it into two additive shares and seal share i to party i.

    Box i is bound to (request id, ``model``, party i, input): see ``mpcvit.sealing``.
    """
    if len(party_keys) != 2:
        raise ValueError(f"need the public keys of exactly 2 parties, got {len(party_keys)}")
    request_id = request_id or new_request_id()
    keypair = generate_keypair()
    s0, s1 = share_fixed_point(x, precision_bits)
    sealed = tuple(
        seal_tensor(s, keypair.private, pk, BoxContext(request_id, model, rank, "input"))
        for rank, (s, pk) in enumerate(zip((s0, s1), party_keys))
    )
    return SealedRequest(request_id, keypair, sealed, model)  # type: ignore[arg-type]


def _open_both(request: SealedRequest, output_shares: list[Sealed] | tuple[Sealed, ...],
               party_keys: list[bytes] | tuple[bytes, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both parties' sealed output shares of ``request``, opened with its one-time key, each in its own context."""
    if len(output_shares) != 2:
        raise ValueError(f"need 2 output shares, got {len(output_shares)}")
    y0, y1 = (
        open_tensor(s, request.keypair.private, pk, BoxContext(request.request_id, request.model, rank, "output"))
        for rank, (s, pk) in enumerate(zip(output_shares, party_keys))
    )
    return y0, y1


def open_output(
    request: SealedRequest,
    output_shares: list[Sealed] | tuple[Sealed, ...],
    party_keys: list[bytes] | tuple[bytes, ...],
    precision_bits: int = DEFAULT_PRECISION_BITS,
) -> torch.Tensor:
    """Open each party's sealed logit share with the one-time key and add them: float64 logits."""
    y0, y1 = _open_both(request, output_shares, party_keys)
    if y0.shape != y1.shape:
        raise ValueError(f"output shares disagree in shape: {tuple(y0.shape)} vs {tuple(y1.shape)}")
    return check_plausible(reconstruct_fixed_point(y0, y1, precision_bits))


def open_indices(
    request: SealedRequest,
    output_shares: list[Sealed] | tuple[Sealed, ...],
    party_keys: list[bytes] | tuple[bytes, ...],
    num_classes: int,
    count: int | None = None,
) -> list[int]:
    """Open each party's sealed share of the class indices (a ``label`` / ``topk:K`` answer) and add them on Z_2^64.

    The integrity net for indices: every index must lie in [0, num_classes) and no index may repeat (garbage from
    mismatched material lands there with probability about K num_classes / 2^64); else :class:`ImplausibleOutput`.
    ``count``: the number of indices the model's policy promises (1 for label, K for topk:K).
    """
    y0, y1 = _open_both(request, output_shares, party_keys)
    if y0.shape != y1.shape or y0.dim() != 1 or (count is not None and y0.numel() != count):
        raise ValueError(f"index shares of shape {tuple(y0.shape)} / {tuple(y1.shape)}, expected ({count},)")
    indices = [int(v) for v in (y0 + y1)]  # int64 addition wraps: the sum on Z_2^64
    if any(not 0 <= i < num_classes for i in indices) or len(set(indices)) != len(indices):
        raise ImplausibleOutput(f"the opened class indices {indices[:8]} are not {len(indices)} distinct classes of "
                                f"{num_classes}: the parties' answer is garbage (their material did not match); it was not used")
    return indices


def check_plausible(logits: torch.Tensor, bound: float = PLAUSIBLE_LOGIT) -> torch.Tensor:
    """``logits`` if every one is finite and within +-``bound``; else :class:`ImplausibleOutput` (never returned)."""
    largest = float(logits.abs().max()) if logits.numel() else 0.0
    if not math.isfinite(largest) or largest > bound:
        raise ImplausibleOutput(f"the opened logits reach {largest:.3g}, beyond any plausible {bound:.3g}: the parties' "
                                "answer is garbage (their material did not match); it was not used")
    return logits


# -- JSON wire format (base64 for bytes) ---------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sealed_to_json(s: Sealed) -> dict[str, Any]:
    return {"shape": list(s.shape), "dtype": s.dtype, "nonce": b64(s.nonce), "ciphertext": b64(s.ciphertext)}


def sealed_from_json(d: dict[str, Any]) -> Sealed:
    return Sealed(tuple(int(v) for v in d["shape"]), str(d["dtype"]), base64.b64decode(d["nonce"]), base64.b64decode(d["ciphertext"]))


def request_to_json(model: str, req: SealedRequest, deadline_unix_ms: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "request_id": req.request_id,
        "client_public_key": b64(req.keypair.public),
        "shares": [sealed_to_json(s) for s in req.shares],
    }
    if deadline_unix_ms is not None:
        body["deadline_unix_ms"] = deadline_unix_ms
    return body


def softmax(logits: torch.Tensor) -> list[float]:
    return [float(p) for p in torch.softmax(logits.double(), dim=-1)]


# -- the SDK -------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of one private classification."""

    model: str
    request_id: str
    class_index: int
    class_name: str
    logits: list[float]  # empty when the model's output policy reveals only indices
    probabilities: list[float]  # likewise
    costs: dict[str, Any] = field(default_factory=dict)
    queue_seconds: float = 0.0
    batch_size: int = 1
    seconds: float = 0.0  # client wall time, request to opened answer
    output_policy: str = "logits"  # the model owner's: "logits", "label" or "topk:K"
    top_k: list[int] = field(default_factory=list)  # the revealed class indices, largest logit first (topk:K / label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "request_id": self.request_id, "class_index": self.class_index,
            "class_name": self.class_name, "logits": self.logits, "probabilities": self.probabilities,
            "costs": self.costs, "queue_seconds": self.queue_seconds, "batch_size": self.batch_size,
            "seconds": self.seconds, "output_policy": self.output_policy, "top_k": self.top_k,
        }


class PrivateClient:
    """``PrivateClient(server_url).classify(image, model=...) -> Result``.

    ``http_client`` may be any ``httpx.Client`` (tests pass FastAPI's
    ``TestClient``). How the parties' sealing keys are trusted (one is
    required, see the module docstring): ``ca`` (the CA certificate: a path
    or PEM bytes), ``pins`` (``sha256:<hex>`` of party 0's and party 1's
    key), ``party_keys`` (the keys themselves; the coordinator is not asked),
    or ``trust_coordinator=True`` (loopback coordinators only).
    """

    def __init__(
        self,
        server_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        party_keys: list[bytes] | None = None,
        ca: str | Path | bytes | None = None,
        pins: list[str] | None = None,
        trust_coordinator: bool = False,
        http_client: Any = None,
    ) -> None:
        import httpx  # the SDK's only network dependency, imported where used

        if pins is not None and len(pins) != 2:
            raise ValueError(f"pins: give one fingerprint per party (2), got {len(pins)}")
        self._ca_pem = Path(ca).read_bytes() if isinstance(ca, (str, Path)) else ca
        self._pins = pins
        self._trust_coordinator = trust_coordinator

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http_client or httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout)
        url = str(getattr(self._http, "base_url", server_url))
        if trust_coordinator and not is_loopback(urlsplit(url).hostname or ""):
            raise ValueError(f"trust_coordinator is accepted only for a loopback coordinator, not {url}; give ca= or pins=")
        self._headers = headers
        self._pinned_keys = party_keys
        self._models: dict[str, dict[str, Any]] | None = None
        self.retries = DEFAULT_RETRIES
        self.implausible = 0  # answers refused by the integrity net (module docstring)
        self.retried = 0  # requests sent again after a 503
        self.resealed = 0  # requests sealed afresh after our own re-send met a 409 (see "Retries")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PrivateClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        r = self._http.get(path, headers=self._headers)
        return self._check(r)

    @staticmethod
    def _check(r: Any) -> Any:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServerError(r.status_code, str(detail))
        return r.json()

    def _post_retrying(self, body: dict[str, Any], deadline_unix_ms: int | None) -> Any:
        """POST ``body`` to /v1/classify; the same body again after a 503's Retry-After (see "Retries" above)."""
        import time

        for attempt in range(self.retries + 1):
            r = self._http.post("/v1/classify", json=body, headers=self._headers)
            if r.status_code != 503 or attempt == self.retries:
                try:
                    return self._check(r)
                except ServerError as exc:
                    exc.after_resend = attempt > 0  # type: ignore[attr-defined]
                    raise
            try:
                wait = min(float(r.headers.get("retry-after", 1)), 5.0)
            except ValueError:
                wait = 1.0
            if deadline_unix_ms is not None and time.time() + wait >= deadline_unix_ms / 1000.0:
                return self._check(r)
            self.retried += 1
            log.info("the coordinator answered 503 (%s); sending the same sealed request again in %.1f s", r.text[:120], wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def models(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The coordinator's models by name (input shape, classes, precision, accuracy, costs); cached unless ``refresh``."""
        if self._models is None or refresh:
            self._models = {m["name"]: m for m in self._get("/v1/models")["models"]}
        return self._models

    def party_keys(self) -> list[bytes]:
        """The parties' sealing keys, verified (see the class docstring); ``PartyKeyError`` says why one is refused."""
        if self._pinned_keys is not None:
            return list(self._pinned_keys)
        if self._ca_pem is None and self._pins is None and not self._trust_coordinator:
            raise PartyKeyError("refusing to use the parties' keys as the coordinator relays them: give the deployment's "
                                "CA certificate (ca=, mpcvit classify --ca) or the keys' fingerprints (pins=, --pin)")
        listed = {int(k["rank"]): k for k in self._get("/v1/parties/keys")["parties"]}
        if sorted(listed) != [0, 1]:
            raise PartyKeyError(f"the coordinator listed keys for ranks {sorted(listed)}, expected 0 and 1")
        keys = []
        for rank in (0, 1):
            entry = listed[rank]
            proof = PartyKeyProof(rank, base64.b64decode(entry["public_key"]), str(entry.get("certificate") or "").encode(),
                                  base64.b64decode(entry.get("signature") or ""))
            if self._ca_pem is not None:
                verify_party_key(proof, self._ca_pem)
            if self._pins is not None:
                check_pinned(rank, proof.public_key, self._pins[rank])
            keys.append(proof.public_key)
        return keys

    def _pick_model(self, model: str | None) -> dict[str, Any]:
        models = self.models()
        if model is None:
            if not models:
                raise ServerError(503, "the coordinator serves no model")
            model = sorted(models)[0]
        if model not in models:
            raise ValueError(f"unknown model {model!r}; the coordinator serves: {', '.join(sorted(models))}")
        return models[model]

    def classify(self, image: ImageLike, model: str | None = None, deadline_unix_ms: int | None = None) -> Result:
        """Preprocess, encode, share, seal, send, open: the class and the costs."""
        import time

        info = self._pick_model(model)
        keys = self.party_keys()
        bits = int(info.get("precision_bits") or DEFAULT_PRECISION_BITS)
        x = preprocess(image, info["input_shape"])
        t0 = time.perf_counter()
        for attempt in range(2):  # a second, freshly sealed request only after an implausible answer or a lost one
            req = seal_input(x, keys, bits, model=info["name"])
            try:
                body = self._post_retrying(request_to_json(info["name"], req, deadline_unix_ms), deadline_unix_ms)
            except ServerError as exc:
                if exc.status_code == 409 and getattr(exc, "after_resend", False) and attempt == 0:
                    # our own re-send after a 503 met a party that had computed the box before its peer failed:
                    # that answer never reached us, so ask once more, freshly sealed (a new request id and key)
                    self.resealed += 1
                    log.info("request %s was computed by one party before the other failed; asking once more, freshly sealed",
                             req.request_id)
                    continue
                raise
            policy = _answer_policy(body)
            try:
                boxes = [sealed_from_json(s) for s in body["output_shares"]]
                if not policy.reveals_logits:
                    indices = open_indices(req, boxes, keys, len(info.get("classes") or []), policy.indices)
                    break
                logits = open_output(req, boxes, keys, bits)
                break
            except ImplausibleOutput:
                self.implausible += 1
                log.warning("request %s: the answer's logits were implausible (garbage); %s", req.request_id,
                            "asking once more" if attempt == 0 else "giving up")
                if attempt == 1:
                    raise
        seconds = time.perf_counter() - t0
        if not policy.reveals_logits:
            return make_index_result(info, req.request_id, indices, str(policy), body.get("costs", {}), body.get("queue_seconds", 0.0),
                                     body.get("batch_size", 1), seconds)
        return make_result(info, req.request_id, logits, body.get("costs", {}), body.get("queue_seconds", 0.0), body.get("batch_size", 1), seconds)


def _answer_policy(body: dict[str, Any]) -> OutputPolicy:
    """The output policy an answer says its shares follow (absent: logits, as before policies existed)."""
    try:
        return OutputPolicy.parse(body.get("output_policy"))
    except PolicyError as exc:
        raise ServerError(502, f"the coordinator's answer names an unknown output policy: {exc}") from exc


def make_index_result(
    info: dict[str, Any], request_id: str, indices: list[int], policy: str, costs: dict[str, Any],
    queue_seconds: float, batch_size: int, seconds: float,
) -> Result:
    """The :class:`Result` of a label / top-k answer: the class (the first index) and the ranked indices, no logits."""
    classes = list(info.get("classes") or [])
    idx = indices[0]
    name = str(classes[idx]) if idx < len(classes) else str(idx)
    return Result(info["name"], request_id, idx, name, [], [], costs, float(queue_seconds), int(batch_size), seconds,
                  output_policy=policy, top_k=list(indices))


def make_result(
    info: dict[str, Any], request_id: str, logits: torch.Tensor, costs: dict[str, Any],
    queue_seconds: float, batch_size: int, seconds: float,
) -> Result:
    probs = softmax(logits)
    idx = int(torch.argmax(logits))
    classes = list(info.get("classes") or [])
    name = str(classes[idx]) if idx < len(classes) else str(idx)
    if not all(math.isfinite(v) for v in probs):
        raise ValueError("the opened logits are not finite")
    return Result(info["name"], request_id, idx, name, [float(v) for v in logits], probs, costs, float(queue_seconds), int(batch_size), seconds)
