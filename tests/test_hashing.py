"""Weight hashes are computed once and cached in the cache folder, never beside the user's weights
(issue 18): A1111 keeps its hashes in one cache file too."""

import hashlib
import json

from dreamshell.weights import hashing
from dreamshell.weights.hashing import CACHE_NAME, sha256_of, weights_sha256


def test_a_hash_is_cached_in_the_cache_folder_not_beside_the_weights(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DREAMSHELL_CACHE_DIR", str(cache))
    weights = tmp_path / "models" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights" * 1000)
    assert sha256_of(weights) == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert sorted(p.name for p in weights.parent.iterdir()) == ["model.safetensors"]   # nothing written beside it
    entry = json.loads((cache / CACHE_NAME).read_text())[f"sha256:{weights.resolve()}"]
    assert entry["hash"] == hashlib.sha256(b"weights" * 1000).hexdigest()


def test_a_new_process_reads_the_hash_from_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMSHELL_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"abc")
    first = sha256_of(weights)
    hashing._memory.clear()                      # as a new process starts
    monkeypatch.setattr(hashing.hashlib, "sha256", lambda *a: (_ for _ in ()).throw(AssertionError("hashed again")))
    assert sha256_of(weights) == first


def test_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMSHELL_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"abc")
    first = sha256_of(weights)
    weights.write_bytes(b"abcd")
    assert sha256_of(weights) == hashlib.sha256(b"abcd").hexdigest() != first


def test_a_diffusers_folder_hashes_its_weight_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMSHELL_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"u")
    (folder / "unet" / "config.json").write_text("{}")
    expected = hashlib.sha256(b"unet/diffusion_pytorch_model.safetensors\0" + hashlib.sha256(b"u").hexdigest().encode())
    assert weights_sha256(folder) == expected.hexdigest()
    assert not list(folder.rglob("*.sha256"))
