"""The preprocessors that need no weights (run/preprocess.py): canny is OpenCV's Canny pixel for pixel (the
hashes below are of cv2.Canny(image, 100, 200) from opencv-python-headless 5.1.0 on these very images), the others
do what A1111's do; maps are cropped and resized to the generation's size."""

import hashlib
import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dreamshell.demo import shapes
from dreamshell.line.errors import UserError
from dreamshell.run.preprocess import canny, crop_and_resize, make_map, shuffle, viewable


def pictures():
    rng = random.Random(5)
    scene = shapes.render(shapes.random_scene(rng), rng, scale=2)
    r = np.random.default_rng(3)
    smooth = Image.fromarray(r.uniform(0, 255, (16, 16, 3)).astype(np.uint8)).resize((96, 80), Image.BICUBIC)
    return {"scene": scene, "smooth": smooth.filter(ImageFilter.GaussianBlur(1))}


OPENCV = {"scene": (179, "d74d8c294cc7567740b8dd3d702416f184ced505c5fd3b94f9cab9cb7c013ae5"),
          "smooth": (1827, "fb395669f058c8cd7762a41a90204ef5f4934fc064df4f903588db986fc1de61")}


@pytest.mark.parametrize("name", OPENCV)
def test_canny_is_opencvs_pixel_for_pixel(name):
    edges = np.asarray(canny(pictures()[name])) > 0
    assert (int(edges.sum()), hashlib.sha256(np.packbits(edges).tobytes()).hexdigest()) == OPENCV[name]


def test_a_map_is_cropped_to_the_generations_aspect_then_resized():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 40, 100))          # the left fifth, cut away by a square crop
    square = crop_and_resize(image, (64, 64))
    assert square.size == (64, 64) and np.asarray(square).max() < 10


def test_each_preprocessor_makes_its_map():
    image = pictures()["scene"]
    size = (64, 64)
    fitted = crop_and_resize(image, size)
    assert np.array_equal(np.asarray(make_map(image, "none", size)), np.asarray(fitted))
    assert np.array_equal(np.asarray(make_map(image, "tile", size)), np.asarray(fitted))
    assert np.array_equal(np.asarray(make_map(image, "blur", size)),
                          np.asarray(fitted.filter(ImageFilter.GaussianBlur(9))))
    edges = make_map(image, "canny", size)
    assert edges.mode == "RGB" and set(np.unique(np.asarray(edges))) <= {0, 255}
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, 32, 64))
    marked = make_map(image, "inpaint", size, mask)
    assert marked.mode == "RGBA" and np.array_equal(np.asarray(marked.getchannel("A")) > 0, np.asarray(mask) > 0)
    assert np.asarray(viewable(marked))[:, :32].max() == 0
    with pytest.raises(UserError, match="give the line -I IMAGE -M MASK"):
        make_map(image, "inpaint", size)


def test_shuffle_moves_the_content_and_is_the_same_for_the_same_image():
    image = pictures()["smooth"]
    a, b = shuffle(image), shuffle(image)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(image))
    assert np.asarray(a).mean() == pytest.approx(np.asarray(image).mean(), abs=25)
