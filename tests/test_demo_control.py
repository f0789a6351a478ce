"""The shipped demo ControlNet puts the shape where its canny map says (a CI-sized sample of
dreamshell/demo/control_eval.measure; the full measurement is models/controlnets/demo_canny.json), and a control
line writes the same files on the local path and the Ray path (the driver makes the maps)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamshell.demo import control_eval, shapes

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_controlnet_is_shipped_and_detected():
    from dreamshell.weights.checkpoint import detect_control
    found = detect_control(ROOT / "models" / "controlnets" / "demo_canny.safetensors")
    assert (found.kind, found.layout) == ("controlnet", "diffusers")


@pytest.fixture(scope="module")
def measured():
    return control_eval.measure(count=6, seeds=(0,), steps=20)


def test_the_demo_controlnet_puts_the_shape_where_the_edges_are(measured):
    assert measured["with"]["mean_iou"] >= measured["without"]["mean_iou"] + 0.25, measured
    assert measured["with"]["mean_iou"] >= 0.45, measured


def test_a_control_line_writes_the_same_files_on_both_paths(tmp_path):
    from test_paths import run_local, run_ray_path
    scene = shapes.Scene("yellow", "square", "black", "large", "top left", 14, 16, 16)
    shapes.render(scene).save(tmp_path / "scene.png")
    lines = [f"a yellow square on a black background -S 3 -s 8 --control demo_canny:{tmp_path / 'scene.png'}:0.9",
             "a red circle on a blue background -S 4 -s 8",
             f"a red circle on a blue background -S 5 -s 8 --control demo_canny/none:{tmp_path / 'scene.png'} -n 2"]
    local_code, _ = run_local(lines, tmp_path / "local")
    ray_code, printed = run_ray_path(lines, tmp_path / "ray")
    assert local_code == 0 and ray_code == 0, printed
    names = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert len(names) == 4 and names == sorted(p.name for p in (tmp_path / "ray").glob("*.png"))
    for name in names:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert np.asarray(Image.open(tmp_path / "local" / names[0])).shape == (64, 64, 3)
