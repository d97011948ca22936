"""seg-run listen / pull: settings that cannot work fail before anything starts, in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seg_runtime.cli import main
from seg_runtime.dicom_node.peers import Allowlist, NodeError, parse_peer, parse_route, valid_uid


@pytest.mark.parametrize(("argv", "message"), [
    (["listen", "--store", "S"], "a BUNDLE_DIR or at least one --route is required"),
    (["listen", "B", "--store", "S", "--send-to", "PACS:4242"], "--send-to: expected AE@host:port"),
    (["listen", "B", "--store", "S", "--send-to", "A@h:70000"], "--send-to: port 70000 out of range"),
    (["listen", "B", "--store", "S", "--route", "Colour=red:b"], "'Colour=red' is not KEY=PATTERN"),
    (["listen", "B", "--store", "S", "--allow-from", "10.0.0.0/33"], "--allow-from:"),
    (["listen", "B", "--store", "S", "--stow-credentials", "f"], "--stow-credentials without --stow URL"),
    (["listen", "B", "--store", "S", "--stow", "ftp://x"], "--stow: expected an http(s) URL"),
    (["pull", "B", "--from", "A@h:104", "--study", "../../etc", "--store", "S"], "--study: not a DICOM UID"),
    (["pull", "B", "--from", "A@h:104", "--study", "1.2.3", "--series", "1.02", "--store", "S"],
     "--series: not a DICOM UID"),
])
def test_bad_node_settings_are_one_line(
    tmp_path: Path, bundle_factory: Callable[..., Path], capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str,
) -> None:
    bundle = str(bundle_factory())
    argv = [bundle if a == "B" else str(tmp_path / "store") if a == "S" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg-run: error: ") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_a_2d_bundle_cannot_serve_a_node(tmp_path: Path, bundle_factory: Callable[..., Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bundle = bundle_factory(spatial_dims=2)
    assert main(["listen", str(bundle), "--store", str(tmp_path / "s"), "--port", "0"]) == 2
    assert "a DICOM node needs a 3D model (this one is 2D)" in capsys.readouterr().err


def test_peers_routes_allowlists_and_uids() -> None:
    assert parse_peer("ORTHANC@[::1]:4242").host == "::1"
    assert str(parse_peer(" PACS @10.1.2.3:104")) == "PACS@10.1.2.3:104"
    route = parse_route("Modality=MR,SeriesDescription=*t1*:brain")
    assert route.matches({"Modality": "mr", "SeriesDescription": "Ax T1 post"})
    assert not route.matches({"Modality": "CT", "SeriesDescription": "t1"}) and route.bundle == Path("brain")
    allow = Allowlist.parse(["PACS"], ["10.0.0.0/8"])
    assert allow.refusal("PACS", "10.9.8.7") is None
    assert allow.refusal("OTHER", "10.9.8.7") == "calling AE title 'OTHER' is not on the allowlist"
    assert allow.refusal("PACS", "192.168.1.1") == "address 192.168.1.1 is not on the allowlist"
    assert Allowlist().refusal("ANY", "127.0.0.1") is None and Allowlist().refusal("ANY", "8.8.8.8")
    assert valid_uid("1.2.840.10008.5.1.4.1.1.2") and valid_uid("0.0")
    for bad in ("", "1", "1.02", "1..2", "1.2.", "../1.2", "1.2/3", "1." + "1" * 64, None):
        assert not valid_uid(bad), bad
    with pytest.raises(NodeError):
        Allowlist.parse(["BACK\\SLASH"])
