"""LoRA, embedding and VAE hashes as A1111 writes them (`Lora hashes`, `TI hashes`, `VAE hash`).

Each expected value is computed here by hand from the bytes, the way A1111's code does it
(`modules/hashes.py` addnet_hash_safetensors and calculate_sha256, `extensions-builtin/Lora/network.py`
NetworkOnDisk, `modules/textual_inversion/textual_inversion.py` create_embedding_from_data,
`modules/sd_vae.py` get_loaded_vae_hash), not by calling dreamshell's helpers.
"""

import hashlib
import json
import os
import struct

import pytest

from dreamshell.weights.library import embedding_hash, lora_hash, vae_hash

PAYLOAD = bytes(range(256)) * 40          # stands for the tensors' bytes


def safetensors_file(path, metadata=None, payload=PAYLOAD, pad=0):
    """A .safetensors file: 8-byte little-endian header length, JSON header (maybe space-padded), payload."""
    header = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


def after_header_sha256(path) -> str:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + n:]).hexdigest()


def whole_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lora_hash_is_the_sha256_after_the_header(tmp_path):
    path = safetensors_file(tmp_path / "detail.safetensors")
    assert lora_hash(path) == after_header_sha256(path)[:12] == hashlib.sha256(PAYLOAD).hexdigest()[:12]
    assert lora_hash(path) != whole_sha256(path)[:12]


@pytest.mark.parametrize("metadata, pad", [({"ss_output_name": "Detail Tweaker", "ss_network_dim": "32"}, 0),
                                           ({}, 5), (None, 7)])
def test_lora_hash_ignores_the_header_and_its_metadata(tmp_path, metadata, pad):
    plain = safetensors_file(tmp_path / "a.safetensors")
    other = safetensors_file(tmp_path / "b.safetensors", metadata, pad=pad)
    assert lora_hash(other) == lora_hash(plain) == after_header_sha256(other)[:12]


def test_lora_hash_takes_the_recorded_sshs_model_hash_first(tmp_path):
    # kohya's trainer records it; A1111's NetworkOnDisk uses it before computing one (a stale one too)
    recorded = "0123456789abcdef" * 4
    path = safetensors_file(tmp_path / "merged.safetensors", {"sshs_model_hash": recorded,
                                                              "sshs_legacy_hash": "abcd1234"})
    assert lora_hash(path) == "0123456789ab"
    assert after_header_sha256(path)[:12] != "0123456789ab"


@pytest.mark.parametrize("junk", ["", "not a hash", "12345", 42, "0123456789ab\nInjected: 1"])
def test_lora_hash_computes_when_the_recorded_one_is_not_a_hash(tmp_path, junk):
    path = safetensors_file(tmp_path / "odd.safetensors", {"sshs_model_hash": junk})
    assert lora_hash(path) == after_header_sha256(path)[:12]


def test_lora_hash_of_other_files_and_diffusers_folders(tmp_path):
    pt = tmp_path / "old.pt"
    pt.write_bytes(b"\x80\x02not really a pickle" * 100)
    assert lora_hash(pt) == whole_sha256(pt)[:12]
    folder = tmp_path / "dreambooth_lora"
    folder.mkdir()
    inner = safetensors_file(folder / "pytorch_lora_weights.safetensors", {"format": "pt"})
    assert lora_hash(folder) == after_header_sha256(inner)[:12]


def test_lora_hash_reads_big_files_in_blocks(tmp_path):
    payload = os.urandom(3 * (1 << 20) + 17)    # A1111 reads 1 MiB blocks
    path = safetensors_file(tmp_path / "big.safetensors", payload=payload)
    assert lora_hash(path) == hashlib.sha256(payload).hexdigest()[:12]


def test_a_changed_file_is_hashed_again(tmp_path):
    path = safetensors_file(tmp_path / "x.safetensors")
    first = lora_hash(path)
    safetensors_file(path, payload=PAYLOAD[::-1] + b"!")
    assert lora_hash(path) == after_header_sha256(path)[:12] != first


@pytest.mark.parametrize("name", ["EasyNegative.pt", "badhandv4.safetensors", "cat-toy.bin"])
def test_embedding_hash_is_the_whole_files_sha256(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        safetensors_file(path, {"name": "x"})
    else:
        path.write_bytes(b"PK\x03\x04 a torch zip " * 50)
    assert embedding_hash(path) == whole_sha256(path)[:12]


def test_vae_hash_is_ten_hex_of_the_whole_file(tmp_path):
    path = safetensors_file(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    assert vae_hash(path) == whole_sha256(path)[:10] and len(vae_hash(path)) == 10
    ckpt = tmp_path / "kl-f8-anime2.ckpt"
    ckpt.write_bytes(b"weights" * 1000)
    assert vae_hash(ckpt) == whole_sha256(ckpt)[:10]
    folder = tmp_path / "sdxl-vae"
    folder.mkdir()
    assert vae_hash(folder) == ""        # a diffusers folder: A1111 has none
