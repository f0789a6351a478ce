"""--outcrop (and !fix IMAGE --outcrop) and --inpaint_area masked: the geometry alone, then on the demo model: the
image outside the seam (outcrop) or outside the mask (only masked) kept byte for byte at float32 and bfloat16, the
new band in the background's colour, and the log line replaying the same bytes."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import PRECISIONS, generator_at
from dreamshell.demo import shapes
from dreamshell.line.request import DreamRequest
from dreamshell.run.masked import crop_box
from dreamshell.run.outcrop import grow, seam_width, soft_mask


def test_the_band_is_the_images_edge_stretched():
    image = Image.new("RGB", (16, 8), (10, 20, 30))
    image.putpixel((15, 3), (200, 0, 0))
    canvas, box = grow(image, (("right", 8), ("top", 8)))
    assert canvas.size == (24, 16) and box == (0, 8, 16, 16)
    px = np.asarray(canvas)
    assert (px[8 + 3, 16:] == (200, 0, 0)).all()            # the edge pixel's row runs on to the right
    assert (px[:8, 0] == (10, 20, 30)).all()                  # the top band repeats the top row
    assert np.array_equal(px[8:, :16], np.asarray(image))


def test_the_seam_falls_from_255_to_0_inside_the_grown_edges_only():
    mask = np.asarray(soft_mask((24, 16), (0, 8, 16, 16), 4))
    assert (mask[:8] == 255).all() and (mask[:, 16:] == 255).all()
    assert list(mask[8:14, 5]) == [204, 153, 102, 51, 0, 0]  # 4 pixels of seam below the top band
    assert list(mask[12, 10:16]) == [0, 0, 51, 102, 153, 204]
    assert (mask[12:, :12] == 0).all()                        # the left and bottom edges did not grow


@pytest.mark.parametrize("box,aspect,want", [
    ((40, 40, 56, 56), 1.0, (16, 16, 80, 80)),                # 16 px + 24 padding each side, square
    ((0, 0, 8, 8), 1.0, (0, 0, 32, 32)),                      # at the corner: moved inside the image
    ((10, 40, 90, 50), 1.0, (10, 5, 90, 85)),                 # too wide: the height grows around the middle
    ((40, 40, 56, 56), 2.0, (0, 16, 128, 80)),                # a wide model: twice as wide as high, moved inside
])
def test_the_crop_is_the_masks_box_grown_by_the_padding_to_the_models_aspect(box, aspect, want):
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    assert crop_box(mask, 24 if box != (10, 40, 90, 50) else 0, aspect) == want


def _demo(precision):
    from dreamshell.weights.models import demo_spec
    gen = generator_at(precision)
    if gen.spec != demo_spec():
        gen.load(demo_spec())
    return gen


SCENE = shapes.Scene("red", "circle", "blue", "small", "center", 9, 31, 31)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_outcrop_keeps_the_image_outside_the_seam_and_paints_the_background(precision):
    from dreamshell.run.image import make_images
    gen = _demo(precision)
    source = shapes.render(SCENE)
    request = DreamRequest(prompt="a red circle on a blue background", seed=1, steps=12, width=64, height=64,
                           cfg_scale=5.0, sampler="k_euler", model="demo", init_img="in.png", strength=0.9,
                           outcrop=(("right", 32), ("top", 16)))
    result, = make_images(gen, [request], None, source, None)
    out = np.asarray(result.image)
    assert result.image.size == (96, 80) and result.request == request
    seam = seam_width(64, 64)
    kept = out[16 + seam:, :64 - seam]
    assert np.array_equal(kept, np.asarray(source)[seam:, :64 - seam])
    labels = shapes.classify_pixels(result.image)
    band = np.concatenate([labels[:16].ravel(), labels[16:, 64:].ravel()])
    # mostly the background's blue (the prompt names a red circle: the demo model may draw a second one there)
    assert (band == list(shapes.COLOURS).index("blue")).mean() > 0.75


@pytest.mark.parametrize("precision", PRECISIONS)
def test_only_masked_keeps_every_byte_outside_the_mask_and_redraws_inside(precision):
    from dreamshell.run.image import make_images
    gen = _demo(precision)
    source = shapes.render(SCENE, scale=4)                     # 256x256
    mask = Image.new("L", source.size, 0)
    ImageDraw.Draw(mask).rectangle((160, 160, 191, 191), fill=255)
    request = DreamRequest(prompt="a yellow square on a blue background", seed=2, steps=10, width=256, height=256,
                           cfg_scale=5.0, sampler="k_euler", model="demo", init_img="in.png", strength=0.9,
                           init_mask="m.png", inpaint_area="masked", inpaint_padding=8)
    result, = make_images(gen, [request], None, source, mask)
    out, src, m = np.asarray(result.image), np.asarray(source), np.asarray(mask) >= 128
    assert np.array_equal(out[~m], src[~m])
    assert (out[m] != src[m]).any(axis=-1).mean() > 0.5


def test_fix_outcrop_makes_an_image_whose_log_line_remakes_it(make_session, tmp_path):
    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.run.postprocess import register_fix
    session = make_session()
    said = []
    dispatcher = Dispatcher(session, said.append)
    register_fix(dispatcher)
    assert not dispatcher.execute("a red circle on a blue background -S 4 -s 3").failed
    first = sorted(session.outdir.glob("*.png"))[0]
    assert not dispatcher.execute(f"!fix {first} --outcrop right 16 -S 9").failed, said
    made = sorted(session.outdir.glob("*.png"))[-1]
    assert Image.open(made).size == (80, 64)
    line = (session.outdir / "dream_log.txt").read_text().splitlines()[-1]
    assert "-S 9 " in line and f"-I {first} -f 0.9 --outcrop right 16" in line
    assert not dispatcher.execute(line.split(": ", 1)[1]).failed
    again = sorted(session.outdir.glob("*.png"))[-1]
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(again)))


@pytest.mark.parametrize("line,error", [
    ("!fix {img}", "!fix needs something to do"),
    ("!fix {img} -U 2 --outcrop top 8", "one thing at a time"),
    ("!fix {img} --outcrop top 8 -C 3", "!fix takes --outcrop with -S and -f; cfg_scale belong on a prompt line"),
    ("!fix {plain} --outcrop top 8", "no recipe in this image"),
])
def test_fix_outcrop_errors_are_one_line(make_session, tmp_path, line, error):
    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.run.postprocess import register_fix
    said = []
    dispatcher = Dispatcher(make_session(), said.append)
    register_fix(dispatcher)
    Image.new("RGB", (64, 64)).save(tmp_path / "plain.png")
    outcome = dispatcher.execute(line.format(img=tmp_path / "plain.png", plain=tmp_path / "plain.png"))
    assert outcome.failed and any(error in s for s in said), said


def test_fix_outcrop_takes_the_models_files_inpainting_variant():
    from pathlib import Path

    from dreamshell.run.postprocess import inpainting_variant
    from dreamshell.weights.models import ModelSpec, Registry
    p = Path("/nowhere")
    models = {"sd15": ModelSpec("sd15", p, "sd1"), "sd15-inpainting": ModelSpec("sd15-inpainting", p, "sd1-inpaint"),
              "xl": ModelSpec("xl", p, "sdxl"), "other-inpaint": ModelSpec("other-inpaint", p, "sd1-inpaint"),
              "sd2": ModelSpec("sd2", p, "sd2")}
    registry = Registry(models)
    assert inpainting_variant(registry, "sd15") == "sd15-inpainting"
    assert inpainting_variant(registry, "xl") is None and inpainting_variant(registry, "sd2") is None
    assert inpainting_variant(registry, "sd15-inpainting") is None
    del models["sd15-inpainting"]
    assert inpainting_variant(Registry(models), "sd15") == "other-inpaint"    # the only one of its family
