"""``mpcvit classify`` and ``mpcvit serve`` against the fake parties."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mpcvit import cli
from mpcvit.checkpoint import load_checkpoint, normalise_input
from mpcvit.client import preprocess
from mpcvit.pki import key_fingerprint
from tests.server.conftest import SAMPLES_DIR, LiveServer
from tests.server.fake_party import FakeParties

pytestmark = pytest.mark.timeout(60)


def test_classify_command_prints_the_plaintext_class_and_costs(
    live: Callable[..., LiveServer], model_dir: Path, capsys: pytest.CaptureFixture[str], parties: FakeParties
) -> None:
    image = SAMPLES_DIR / "digits_00008_3.png"
    pins = [a for k in parties.runtime.keys for a in ("--pin", key_fingerprint(k.public))]
    net, meta = load_checkpoint(model_dir / "mpcvit_2_4_8")
    with torch.no_grad():
        expected = int(net(normalise_input(preprocess(image, (1, 8, 8))[None], meta)).argmax())
    with live() as server:
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8", "--json", *pins]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["class_index"] == expected and out["model"] == "mpcvit_2_4_8"
        assert out["costs"]["total"]["rounds"] > 0 and len(out["logits"]) == 10
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8", *pins]) == 0
        text = capsys.readouterr().out
        assert f"class: {expected} " in text and "rounds" in text and "bytes" not in text.split("costs:")[0]
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "nope", *pins]) == 1
        assert "unknown model" in capsys.readouterr().err
        # no way to verify the parties' keys, or a key that is not the pinned one: refused, one line, nothing sent
        received = len(parties.runtime.received[0])
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8"]) == 2
        assert "--ca" in capsys.readouterr().err
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8", *pins[2:], *pins[:2]]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("mpcvit classify: refusing to send the image: party 0") and len(err.splitlines()) == 1, err
        assert len(parties.runtime.received[0]) == received
    assert cli.main(["classify", str(SAMPLES_DIR / "missing.png"), "--server", server.url, *pins]) == 1


def test_classify_compare_plaintext_shows_both_classes(
    live: Callable[..., LiveServer], model_dir: Path, capsys: pytest.CaptureFixture[str], parties: FakeParties
) -> None:
    image = SAMPLES_DIR / "digits_00008_3.png"
    pins = [a for k in parties.runtime.keys for a in ("--pin", key_fingerprint(k.public))]
    local = model_dir / "mpcvit_2_4_8"
    with live() as server:
        argv = ["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8", *pins, "--compare-plaintext", str(local)]
        assert cli.main([*argv, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["plaintext"]["class_index"] == out["class_index"] and out["agree"] is True
        assert out["plaintext"]["name"] == "mpcvit_2_4_8"
        assert cli.main(argv) == 0
        text = capsys.readouterr().out
        assert f"class: {out['class_name']} " in text
        assert f"plaintext: {out['class_name']} (index {out['class_index']}, p=" in text and "agrees with the private class" in text
        assert "note:" not in text
        # another local checkpoint than the one served: both classes, and a note saying so
        assert cli.main(["classify", str(image), "--server", server.url, "--model", "mpcvit_2_4_8", *pins,
                         "--compare-plaintext", str(model_dir / "vit_2_4_8")]) == 0
        assert "note: the coordinator served 'mpcvit_2_4_8', the local checkpoint is 'vit_2_4_8'" in capsys.readouterr().out
        # a folder that is no checkpoint fails before anything is sent
        received = len(parties.runtime.received[0])
        assert cli.main(["classify", str(image), "--server", server.url, *pins, "--compare-plaintext", str(model_dir / "nope")]) == 1
        assert "does not exist" in capsys.readouterr().err and len(parties.runtime.received[0]) == received


def test_serve_options_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mpcvit.commands import serve

    monkeypatch.setenv("MPCVIT_PARTY0", "127.0.0.2:1")
    monkeypatch.setenv("MPCVIT_INSECURE", "true")
    monkeypatch.setenv("MPCVIT_BATCH_SIZE", "3")
    parser = cli.build_parser(load="serve")
    args = parser.parse_args(["serve", "--party1", "[::1]:2", "--batch-size", "5", "--models", str(tmp_path), "--preload", "m"])
    s = serve.settings_from_args(args)
    assert (s.party0, s.party1, s.batch_size, s.model_dir, s.preload_models, s.insecure) == ("127.0.0.2:1", "[::1]:2", 5, tmp_path, ["m"], True)
    with pytest.raises(ValueError, match="only with loopback addresses.*party1 10.0.0.2:2"):  # plaintext gRPC off this machine
        serve.settings_from_args(parser.parse_args(["serve", "--party1", "10.0.0.2:2"]))
    monkeypatch.delenv("MPCVIT_INSECURE")
    with pytest.raises(ValueError, match="cert_dir"):
        serve.settings_from_args(parser.parse_args(["serve"]))
