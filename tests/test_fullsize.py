"""Full size, offline: a random-weight SD 1.5 file in the original (LDM) layout, as downloaded, is
detected from its header, loaded with every tensor where it was written, and makes an image."""

import pytest

pytestmark = pytest.mark.slow   # full size / Ray: minutes; CI runs it


def test_a_full_size_sd15_checkpoint_loads_offline_with_every_tensor_in_place(tmp_path, monkeypatch):
    import socket

    from dreamshell.engines.fullsize import check, write_checkpoint

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    path = write_checkpoint("sd15", tmp_path, seed=0)
    assert path.stat().st_size > 2_000_000_000  # 1.07 billion float16 weights
    result = check(path, "sd15", size=64, steps=2)
    assert result["detected_without_torch"] == result["detected_by_engine"] == "sd1"
    assert result["tensors_written"] == result["tensors_loaded"] == result["loaded_equal_to_written"] == 1130
    assert result["image"] == [64, 64] and result["scheduler_prediction"] == "epsilon"
