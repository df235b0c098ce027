"""Backbone registry: name parsing, registration, devices, weight digests."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import tacluster.embed.backbones as backbones
from tacluster.embed.backbones import (
    available_backbones,
    file_digest,
    load_backbone,
    register_backbone,
    resolve_device,
)
from tacluster.embed.backbones.base import Backbone, NounBank
from tacluster.errors import BackboneError, InputError


class _Dummy(Backbone):
    def __init__(self, arg, device):
        self.name, self.arg, self.device = f"dummy:{arg}", arg, device

    @property
    def fingerprint(self):
        return "0" * 64

    def preprocess(self, image):
        raise NotImplementedError

    def encode_images(self, batch):
        raise NotImplementedError

    def noun_bank(self, words, progress=True):
        return NounBank(list(words), np.zeros((len(words), 2), np.float32))


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))
    return backbones._REGISTRY


def test_builtin_schemes_listed():
    assert {"lite", "openclip", "hf"} <= set(available_backbones())
    assert available_backbones() == sorted(available_backbones())


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(BackboneError) as err:
        load_backbone("nosuch:thing")
    msg = str(err.value)
    assert "'nosuch'" in msg and "hf" in msg and "lite" in msg and "openclip" in msg
    for bad in ("", "   ", None, 3):
        with pytest.raises(BackboneError, match="invalid"):
            load_backbone(bad)


def test_register_callable_receives_argument_and_device(registry):
    register_backbone("dummy", _Dummy)
    assert "dummy" in available_backbones()
    b = load_backbone("dummy:a/b:c", device="cpu")
    assert isinstance(b, _Dummy) and b.arg == "a/b:c" and b.device == "cpu"
    assert load_backbone("dummy").arg == ""


def test_register_import_path_is_lazy(registry, monkeypatch):
    module = types.ModuleType("tacluster_fake_backbone_mod")
    module.make = _Dummy
    # Registration must not import: the module does not exist yet.
    register_backbone("lazy", "tacluster_fake_backbone_mod:make")
    monkeypatch.setitem(sys.modules, "tacluster_fake_backbone_mod", module)
    assert load_backbone("lazy:x").arg == "x"
    register_backbone("broken", "tacluster_no_such_module_xyz:make")
    with pytest.raises(BackboneError, match="cannot import"):
        load_backbone("broken")


def test_register_rejects_bad_input(registry):
    with pytest.raises(BackboneError):
        register_backbone("a:b", _Dummy)
    with pytest.raises(BackboneError):
        register_backbone("", _Dummy)
    with pytest.raises(BackboneError, match="package.module:function"):
        register_backbone("x", "no_colon_here")
    with pytest.raises(BackboneError, match="callable"):
        register_backbone("x", 42)


def test_lite_goes_to_litebackbone_from_spec(monkeypatch):
    seen = []

    class FakeLite(_Dummy):
        @classmethod
        def from_spec(cls, spec):
            seen.append(spec)
            return cls(spec, "cpu")

        def to(self, device):
            self.device = device
            return self

    fake = types.ModuleType("tacluster.embed.backbones.lite")
    fake.LiteBackbone = FakeLite
    monkeypatch.setitem(sys.modules, "tacluster.embed.backbones.lite", fake)
    assert load_backbone().arg == ""  # default name is "lite"
    assert load_backbone("lite:b0-384").arg == "b0-384"
    assert seen == ["", "b0-384"]


def test_devices(monkeypatch):
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    with pytest.raises(InputError, match="'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_backbone("hf:/does/not/matter", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_file_digest_hashes_every_byte_and_remembers_it(tmp_path, monkeypatch):
    import hashlib
    import os

    monkeypatch.setenv("TACLUSTER_CACHE", str(tmp_path / "cache"))
    data = bytearray(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(data))
    d0 = file_digest(big)
    assert d0 == hashlib.sha256(bytes(data)).hexdigest()  # the whole file, not samples
    copy = tmp_path / "copy.bin"
    copy.write_bytes(bytes(data))
    assert file_digest(copy) == d0  # content-based: a copy keeps its digest
    for pos in (10, 77_777, 150_000, 299_990):  # a change anywhere changes the digest
        changed = bytearray(data)
        changed[pos] ^= 0xFF
        big.write_bytes(bytes(changed))
        os.utime(big, ns=(1, 10**9 + pos))  # a new mtime: the remembered digest is not reused
        assert file_digest(big) == hashlib.sha256(bytes(changed)).hexdigest(), pos
    # Remembered by path, size and mtime: a second call does not read the file.
    monkeypatch.setattr("builtins.open", None)
    assert file_digest(big) == hashlib.sha256(bytes(changed)).hexdigest()
