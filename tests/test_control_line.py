"""--control, --outcrop (-c, -D) and --inpaint_area on a line: what they read, what they write, and the one line
each wrong value gets (no torch)."""

import pytest

from dreamshell.line.control import ControlSpec, default_preprocessor, format_control, parse_control
from dreamshell.line.formatter import format_request
from dreamshell.line.parser import ParseError, parse_line, parse_request


@pytest.mark.parametrize("token,spec", [
    ("canny:edges.png", ControlSpec("canny", "edges.png")),
    ("canny:edges.png:0.8", ControlSpec("canny", "edges.png", 0.8)),
    ("demo_canny/none:e.png:1:0.2:0.9", ControlSpec("demo_canny", "e.png", 1.0, 0.2, 0.9, "none")),
    ("tile/BLUR:a b.png:0.5:0:0.5", ControlSpec("tile", "a b.png", 0.5, 0.0, 0.5, "blur")),
    ("m:-1", ControlSpec("m", "-1")),
    ("m:C:/pics/x.png:0.7", ControlSpec("m", "C:/pics/x.png", 0.7)),       # a colon in the path stays in it
    ("m:shot:2.png", ControlSpec("m", "shot:2.png")),
])
def test_control_values_are_read_from_the_right(token, spec):
    assert parse_control(token) == spec


def test_an_image_ending_in_a_number_keeps_it_when_written():
    spec = ControlSpec("m", "frame:7")
    assert format_control(spec) == "m:frame:7:1:0:1"
    assert parse_control(format_control(spec)) == spec


@pytest.mark.parametrize("line", [
    "a cat --control canny:edges.png:0.8 --control demo_tile/blur:in.png:1:0.25:0.75 -S 3",
    "a cat --control canny:-1",
    'a cat --control "canny:my pics/e.png"',
    "a cat -I in.png --outcrop top 64 right 128",
    "a cat -I in.png -M m.png --inpaint_area masked --inpaint_padding 16",
])
def test_lines_with_control_switches_read_back_as_written(line):
    request = parse_line(line)
    assert parse_line(format_request(request)) == request


def test_control_is_given_once_per_model_and_written_once_per_value():
    request = parse_request("a cat --control a:1.png --control b:2.png:0.5")
    assert [c.model for c in request.control] == ["a", "b"]
    assert format_request(request).endswith("--control a:1.png --control b:2.png:0.5")


@pytest.mark.parametrize("line,error", [
    ("a cat --control canny", "is not MODEL:IMAGE"),
    ("a cat --control :x.png", "not MODEL:IMAGE"),
    ("a cat --control canny:x.png:3", "weight 3 is out of range; a control's weight goes from 0 to 2"),
    ("a cat --control canny:x.png:1:0.8:0.2", "0 <= start < end <= 1"),
    ("a cat --control canny/sobel:x.png", "unknown preprocessor 'sobel'; preprocessors: canny, tile"),
    ("a cat --control c/depth:x.png", "preprocessor depth needs annotator weights (MiDaS or ZoeDepth)"),
    ("a cat --control c/openpose:x.png", "needs annotator weights (OpenPose)"),
    ("a cat --control a:x.png --control A:y.png", "names one model twice"),
    ("a cat --control a:1 --control b:1 --control c:1 --control d:1 --control e:1", "the most is 4"),
    ("a cat -c top 64", "--outcrop grows an image: give it with -I"),
    ("a cat -I x.png -c top 60", "pixels are a multiple of 8"),
    ("a cat -I x.png -c up 64", "'up' is not a direction"),
    ("a cat -I x.png -c top 64 top 8", "top is given twice"),
    ("a cat -I x.png -c top 64 bottom", "is not direction/pixel pairs"),
    ("a cat -I x.png -M m.png -c top 64", "--outcrop makes its own mask"),
    ("a cat -I x.png -c top 64 --control a:x.png", "--outcrop with --control is not supported"),
    ("a cat --inpaint_area masked", "inpaints around the -M mask"),
    ("a cat -I x.png -M m.png --inpaint_area all", "'all' is not an inpaint area"),
    ("a cat -I x.png -M m.png --inpaint_padding -3", "from 0 to 1024"),
    ("a cat -I x.png --force_outpaint", "outpainting is not supported"),
    ("a cat -cf 0.5", "CodeFormer face restoration is not supported"),
])
def test_each_wrong_value_is_one_line(line, error):
    with pytest.raises(ParseError) as e:
        parse_request(line)
    assert error in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("line", ["a cat -I x.png -c top 64 right 128", "a cat -I x.png --outcrop top 64 right 128",
                                  "a cat -I x.png -D top 64 right 128", "a cat -I x.png --out_direction top 64 right 128"])
def test_invokeai_spellings_of_outcrop_read_the_same(line):
    request = parse_request(line)
    assert request.outcrop == (("top", 64), ("right", 128))
    assert "--outcrop top 64 right 128" in format_request(request)


def test_padding_implies_only_masked_and_whole_is_the_default():
    assert parse_request("a -I x.png -M m.png --inpaint_padding 8").inpaint_area == "masked"
    assert parse_request("a -I x.png -M m.png --inpaint_area whole").inpaint_area is None


@pytest.mark.parametrize("model,pre", [("control_v11p_sd15_canny", "canny"), ("control_v11f1e_sd15_tile", "tile"),
                                       ("control_v11p_sd15_inpaint", "inpaint"), ("control_v11e_sd15_shuffle", "shuffle"),
                                       ("control_v11f1p_sd15_depth", "none"), ("t2iadapter_canny_sd15v2", "canny")])
def test_the_default_preprocessor_comes_from_the_models_name(model, pre):
    assert default_preprocessor(model) == pre


def test_help_says_what_control_means():
    from dreamshell.line.switches import BY_SPELLING
    text = BY_SPELLING["--control"].help
    assert "-1: the last image" in text and "canny" in text and "weight" in text
    assert BY_SPELLING["-c"] is BY_SPELLING["--outcrop"] is BY_SPELLING["-D"]
