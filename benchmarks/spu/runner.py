"""Run one model of the family under SecretFlow SPU (SEMI2K 2PC) and write its costs as JSON.

Runs in the SPU environment (``make spu-env``), never in the project's:

    .venv-spu/bin/python -m benchmarks.spu.runner --arch arch.json [--weights model.safetensors]
        [--inputs x.npy] [--mode nodes|sim] [--networks none,lan,wan] --out out.json

Settings, as the MPCViT authors name them: SEMI2K, 2 parties, ring FM64.
Fixed point: SPU's default for FM64, 18 fraction bits (``fxp_fraction_bits``).
Beaver triples: SPU's default for SEMI2K, the trusted first party
(``TrustedFirstParty``): party 0 knows the seeds of every triple and keeps the
correction, so triples cost no online messages, like our dealer's offline
prefetch. It is not secure against party 0 and is used here for cost
comparison only, as SPU's own benchmarks use it. The TTP provider needs
SPU's separate beaver server, which the wheel does not ship.

Modes: ``nodes`` (default) runs two SPU runtimes in two processes that talk
over SPU's brpc link on loopback; for a network other than ``none`` each
party dials the other through a delaying relay (``relay.py``). ``sim`` is
SPU's simulator (two threads, in-memory link), labelled so in the JSON.

All inputs (the image and every weight) enter as secret shares, as in SPU's
own examples. Costs come from SPU's profiler (``enable_pphlo_profile``,
``enable_hal_profile``): per pphlo op and in total, each party's send bytes
and send actions, and the execution seconds SPU reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FRACTION_BITS = 18
LOG_OP = re.compile(r"- (\S+), executed (\d+) times, duration ([0-9.e+-]+)s, send bytes (\d+) recv bytes (\d+), "
                    r"send actions (\d+), recv actions (\d+)")
LOG_SECTION = re.compile(r"(HLO|HAL|MPC) profiling: total time ([0-9.e+-]+)")
LOG_LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")
LOG_EXEC = re.compile(r"execution took ([0-9.e+-]+)s")


def runtime_config(profile: bool = True) -> Any:
    import spu.libspu as libspu

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64,
                               fxp_fraction_bits=FRACTION_BITS)
    cfg.beaver_type = libspu.RuntimeConfig.BeaverType.TrustedFirstParty
    cfg.enable_pphlo_profile = profile
    cfg.enable_hal_profile = profile
    return cfg


def settings() -> dict[str, Any]:
    import jax
    import spu

    return {"protocol": "SEMI2K", "parties": 2, "field": "FM64", "fxp_fraction_bits": FRACTION_BITS,
            "beaver": "TrustedFirstParty (SPU's SEMI2K default)", "inputs": "image and weights secret-shared",
            "spu": spu.__version__, "jax": jax.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


# -- the program ------------------------------------------------------------------


def load_model(arch: Path, weights: Path | None, seed: int) -> tuple[dict[str, Any], Any]:
    from benchmarks.spu import twin

    spec = json.loads(arch.read_text())
    if weights is not None:
        from safetensors.numpy import load_file

        state = load_file(str(weights))
    else:
        state = twin.random_state(spec, seed)
    return spec, twin.prepare_params(state, spec)


def compile_forward(spec: dict[str, Any], params: Any, x: np.ndarray) -> tuple[Any, list[np.ndarray]]:
    """The SPU executable of the twin's forward, and its flat inputs (all secret)."""
    import jax
    import spu.libspu as libspu
    import spu.utils.frontend as fe

    from benchmarks.spu import twin

    def fn(p: Any, img: Any) -> Any:
        return twin.forward(p, img, spec)

    flat, _ = jax.tree_util.tree_flatten((params, x))
    names = [f"in{i}" for i in range(len(flat))]
    exe, _ = fe.compile(fe.Kind.JAX, fn, (params, x), {}, names, [libspu.Visibility.VIS_SECRET] * len(flat),
                        lambda outs: [f"out{i}" for i in range(len(outs))])
    return exe, [np.asarray(a, dtype=np.float32) for a in flat]


# -- profiler logs -------------------------------------------------------------------


def parse_profile(text: str) -> dict[str, Any]:
    """SPU's profiler lines -> totals and per-op tables (HLO = pphlo ops, HAL, MPC kernels)."""
    out: dict[str, Any] = {"per_op": {"HLO": {}, "HAL": {}, "MPC": {}}}
    section = None
    for line in text.splitlines():
        if m := LOG_SECTION.search(line):
            section = m.group(1)
        elif (m := LOG_OP.search(line)) and section:
            name, n, dur, sb, rb, sa, ra = m.groups()
            out["per_op"][section][name] = {"executed": int(n), "seconds": float(dur), "send_bytes": int(sb),
                                            "send_actions": int(sa)}
        elif m := LOG_LINK.search(line):
            out["send_bytes"], out["recv_bytes"], out["send_actions"], out["recv_actions"] = map(int, m.groups())
        elif m := LOG_EXEC.search(line):
            out["execution_s"] = float(m.group(1))
    return out


class CaptureOutput:
    """Redirect this process's C-level stdout and stderr (where SPU logs) into a file."""

    def __enter__(self) -> "CaptureOutput":
        self.file = tempfile.TemporaryFile(mode="w+")
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        self.file.seek(0)
        self.text = self.file.read()
        self.file.close()


# -- simulator -----------------------------------------------------------------------


def run_sim(exe: Any, flat: list[np.ndarray]) -> dict[str, Any]:
    import spu.utils.simulation as ss

    sim = ss.Simulator(2, runtime_config())
    with CaptureOutput() as cap:
        t0 = time.perf_counter()
        (logits,) = sim(exe, *flat)
        wall = time.perf_counter() - t0
    prof = parse_profile(cap.text)
    return {"mode": "simulator (two threads, in-memory link)", "network": "none", "wall_s": wall,
            "logits": np.asarray(logits).tolist(), "parties": [prof]}


# -- two real nodes ----------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _write_shares(path: Path, shares: list[Any]) -> None:
    """Shares as raw bytes (meta + chunks), length-prefixed; nothing is pickled."""
    with path.open("wb") as f:
        f.write(len(shares).to_bytes(8, "little"))
        for s in shares:
            parts = [s.meta, *s.share_chunks]
            f.write(len(parts).to_bytes(8, "little"))
            for p in parts:
                f.write(len(p).to_bytes(8, "little"))
                f.write(p)


def _read_shares(path: Path) -> list[Any]:
    import spu.libspu as libspu

    data = path.read_bytes()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n:pos]

    out = []
    for _ in range(int.from_bytes(take(8), "little")):
        parts = [take(int.from_bytes(take(8), "little")) for _ in range(int.from_bytes(take(8), "little"))]
        s = libspu.Share()
        s.meta = parts[0]
        s.share_chunks = parts[1:]
        out.append(s)
    return out


def run_nodes(exe: Any, flat: list[np.ndarray], network: str, work: Path) -> dict[str, Any]:
    """Two SPU runtimes in two processes over brpc on loopback, through delaying relays unless network is none."""
    import spu.api as spu_api
    import spu.libspu as libspu

    from benchmarks.spu.relay import LINKS, Relay

    io = spu_api.Io(2, runtime_config())
    shares = [io.make_shares(a, libspu.Visibility.VIS_SECRET) for a in flat]
    (work / "exe.bin").write_bytes(exe.SerializeToString())
    for r in range(2):
        _write_shares(work / f"in{r}.bin", [s[r] for s in shares])
    listen = _free_ports(4)
    relays = []
    if network == "none":
        dial = listen[:2]  # each party dials the other's own port
    else:
        dial = listen[2:]
        relays = [Relay(dial[r], listen[r], LINKS[network]).start() for r in range(2)]
    procs = []
    for r in range(2):
        hosts = [f"127.0.0.1:{listen[i] if i == r else dial[i]}" for i in range(2)]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.spu.runner", "party", "--rank", str(r), "--work", str(work),
             "--hosts", ",".join(hosts)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate()[0] for p in procs]
    for r in relays:
        r.stop()
    for r, p in enumerate(procs):
        if p.returncode != 0:
            raise RuntimeError(f"SPU party {r} failed:\n{logs[r][-3000:]}")
    out_shares = [_read_shares(work / f"out{r}.bin") for r in range(2)]
    logits = np.asarray(io.reconstruct([out_shares[0][0], out_shares[1][0]]))
    times = [json.loads((work / f"time{r}.json").read_text()) for r in range(2)]
    return {"mode": "two SPU nodes (processes) over brpc on loopback", "network": network,
            "relay": None if network == "none" else LINKS[network].__dict__,
            "wall_s": max(t["run_s"] for t in times), "logits": logits.tolist(),
            "parties": [parse_profile(text) for text in logs]}


def party_main(rank: int, work: Path, hosts: list[str]) -> None:
    import spu.api as spu_api
    import spu.libspu as libspu

    desc = libspu.link.Desc()
    for i, h in enumerate(hosts):
        desc.add_party(f"party{i}", h)
    desc.recv_timeout_ms = 3600 * 1000
    desc.connect_retry_times = 600
    desc.connect_retry_interval_ms = 100
    lctx = libspu.link.create_brpc(desc, rank)
    exe = libspu.Executable()
    exe.ParseFromString((work / "exe.bin").read_bytes())
    rt = spu_api.Runtime(lctx, runtime_config())
    for name, share in zip(exe.input_names, _read_shares(work / f"in{rank}.bin")):
        rt.set_var(name, share)
    lctx.barrier()
    t0 = time.perf_counter()
    rt.run(exe)
    run_s = time.perf_counter() - t0
    _write_shares(work / f"out{rank}.bin", [rt.get_var(n) for n in exe.output_names])
    (work / f"time{rank}.json").write_text(json.dumps({"run_s": run_s}))
    sys.stdout.flush()
    lctx.stop_link()


# -- CLI ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("party", help="internal: one SPU node")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--hosts", required=True)
    ap.add_argument("--arch", type=Path, help="arch.json (an ArchSpec)")
    ap.add_argument("--weights", type=Path, help="model.safetensors; random weights when absent")
    ap.add_argument("--inputs", type=Path, help="normalised images (B, C, H, W) .npy; one random image when absent")
    ap.add_argument("--mode", choices=("nodes", "sim"), default="nodes")
    ap.add_argument("--networks", default="none", help="nodes mode: comma list of none, lan, wan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plain-only", action="store_true", help="only the twin's plaintext logits")
    ap.add_argument("--out", type=Path, required=False)
    a = ap.parse_args(argv)
    if a.cmd == "party":
        party_main(a.rank, a.work, a.hosts.split(","))
        return
    if a.arch is None or a.out is None:
        ap.error("--arch and --out are required")
    run(a)


def run(a: argparse.Namespace) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")
    from benchmarks.spu import twin

    spec, params = load_model(a.arch, a.weights, a.seed)
    if a.inputs is not None:
        x = np.load(a.inputs).astype(np.float32)
    else:
        x = np.random.default_rng(a.seed + 1).standard_normal((1, spec["in_chans"], spec["img_size"], spec["img_size"])).astype(np.float32)
    plain = np.asarray(twin.forward(params, x, spec))
    doc: dict[str, Any] = {"arch": spec, "weights": str(a.weights) if a.weights else f"random (seed {a.seed})",
                           "batch": int(x.shape[0]), "plain_logits": plain.tolist(), "settings": settings(), "runs": []}
    if not a.plain_only:
        t0 = time.perf_counter()
        exe, flat = compile_forward(spec, params, x)
        doc["compile_s"] = time.perf_counter() - t0
        if a.mode == "sim":
            doc["runs"].append(run_sim(exe, flat))
        else:
            for net in a.networks.split(","):
                with tempfile.TemporaryDirectory() as work:
                    doc["runs"].append(run_nodes(exe, flat, net, Path(work)))
        for r in doc["runs"]:
            err = np.abs(np.asarray(r["logits"]) - plain)
            r["max_abs_logit_error"] = float(err.max())
            r["top1_agreement"] = float((np.asarray(r["logits"]).argmax(-1) == plain.argmax(-1)).mean())
    a.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
