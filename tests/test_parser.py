"""The dream> line grammar: what people type and what the original shell wrote."""

import pytest

from dreamshell.line.formatter import format_request
from dreamshell.line.parser import ParseError, parse_line, parse_request
from dreamshell.line.request import BangCommand, Blank, DreamRequest, HelpRequest, UpscaleSpec

VALID = [
    # (line, canonical command)
    ("a lighthouse at dusk -S 42 -n 3 -s 30 -U 2", '"a lighthouse at dusk" -s 30 -S 42 -n 3 -U 2'),
    ("a cat's hat -S 1", "\"a cat's hat\" -S 1"),
    ('"a -in b" -S 1', '"a -in b" -S 1'),
    ("'single quoted -x' -s 5", '"single quoted -x" -s 5'),
    ('"she said \\"hi\\"" -S 3', '"she said \\"hi\\"" -S 3'),
    ("x-ray of a well-known cat -S 2", '"x-ray of a well-known cat" -S 2'),
    ("a cat -- the best -S 2", '"a cat -- the best" -S 2'),
    # the original shell's v1.15 log line, path prefix and all
    ('outputs/img-samples/000012.3355519391.png: "a fantastic alien landscape" -s 60 -S 3355519391 '
     '-W 576 -H 512 -C 7.5 -A k_lms',
     '"a fantastic alien landscape" -s 60 -S 3355519391 -W 576 -H 512 -C 7.5 -A k_lms'),
    # v1.0x glued forms, -b1 on every line, -m as the sampler
    ("outputs/img-samples/000001.1579445059.png: a cat -s50 -W512 -H512 -C7.5 -Ak_lms -S1579445059 -b1",
     '"a cat" -s 50 -S 1579445059 -W 512 -H 512 -C 7.5 -A k_lms'),
    ("a dog -s50 -b1 -W512 -H512 -C7.5 -mplms -S42", '"a dog" -s 50 -S 42 -W 512 -H 512 -C 7.5 -A plms'),
    ("a dog -b 1 -s 5", '"a dog" -s 5'),
    ("x -U 4 0.5 -S -1 -I -1 -f 0.3", '"x" -S -1 -I -1 -f 0.3 -U 4 0.5'),
    ('x -A "Euler a" -g -x -t --seamless', '"x" -A k_euler_a -g -x -t --seamless'),
    ('x -A "DPM++ 2M Karras"', '"x" -A "DPM++ 2M Karras"'),
    ("x --steps=12 --cfg-scale 3 --sampler DDIM", '"x" -s 12 -C 3 -A ddim'),
    ("x -V 42:0.1,77:0.2 -v 0.25", '"x" -v 0.25 -V 42:0.1,77:0.2'),
    ("x -I in.png -M mask.png --fit -f 1", '"x" -I in.png -f 1 -M mask.png --fit'),
    ('x -o "my dir" --model demo', '"x" --model demo -o "my dir"'),
    ("a [blurry] [dark] cat:0.25 dog:0.75", '"a [blurry] [dark] cat:0.25 dog:0.75"'),
    ("ratio 16\\:9 poster -S 0", '"ratio 16\\\\:9 poster" -S 0'),
    ("x -U 2 --save_original", '"x" -U 2 --save_original'),
]


@pytest.mark.parametrize("line,canonical", VALID)
def test_valid_lines_parse_to_their_canonical_form(line, canonical):
    request = parse_request(line)
    assert format_request(request) == canonical
    # the canonical form is a fixed point
    assert format_request(parse_request(canonical)) == canonical
    assert parse_request(canonical) == request


def test_fields_are_typed():
    r = parse_request("a lighthouse at dusk -S 42 -n 3 -s 30 -U 4 0.5 -C 7.5")
    assert r == DreamRequest(prompt="a lighthouse at dusk", seed=42, iterations=3, steps=30,
                             upscale=UpscaleSpec(4.0, 0.5), cfg_scale=7.5)


def test_seed_zero_is_a_seed():
    assert parse_request("x -S 0").seed == 0
    assert "-S 0" in format_request(parse_request("x -S 0"))


def test_negative_seed_and_last_image_are_kept_for_the_session():
    r = parse_request("x -S -2 -I -1")
    assert r.seed == -2 and r.init_img == "-1"


ERRORS = [
    # (line, what the one-line message must say)
    ("x -s abc", "-s: 'abc' is not a whole number"),
    ("x -s 0", "-s: '0' is too small"),
    ("x -W 500", "multiples of 8"),
    ("x -S 4294967296", "too large"),
    ("x -A k_lmss", "did you mean 'k_lms'"),
    ("x --seeed 3", "did you mean --seed"),
    ("x -Z 3", "unknown switch '-Z'"),
    ("x -G 0.5", "-G: face restoration (GFPGAN) is not supported"),
    ("x -ft gfpgan", "-ft: face restoration is not supported"),
    ("x -cf 0.7", "-cf: CodeFormer face restoration is not supported"),
    ("x --embiggen 2", "--embiggen: embiggen is not supported"),
    ("x --hires_fix -I a.png", "--hires_fix starts from noise"),
    ("x --hires_scale 9", "the hires scale goes from 1 to 8"),
    ("x --hires_upscaler bicubic", "use one of latent, lanczos, esrgan"),
    ("x --clip_skip 0", "--clip_skip goes from 1"),
    ("x <lora:a:1:2>", "one weight per LoRA"),
    ("x <lora:a:heavy>", "is not a number"),
    ("x <lora:a> <lora:a:0.5>", "tagged twice"),
    ("x <hypernet:h:1>", "not supported"),
    ("a red cross <lora:demo_cross:1 -S 3", "is not closed"),
    ("a cat [blurry <lora:x:1>] -S 3", "stands in the [negative prompt]"),
    ("x -b 2", "-b: batch size"),
    ("-S 3", "no prompt"),
    ("x -S", "-S needs a value"),
    ("x -s 5 -s 6", "-s is given twice"),
    ("a [blurry cat -S 1", "'[' without ']'"),
    ("a blurry] cat", "']' without '['"),
    ('"unclosed -S 1', "never closed"),
    ("x -U 0.5", "the upscale factor goes from 1 to 16"),
    ("x -U 2 3", "the upscale strength goes from 0"),
    ("x -f 0", "above 0 and at most 1"),
    ("x -C inf", "not a finite number"),
    ("x -g2", "unknown switch '-g2'; did you mean -g?"),
    ("x -S 1 stray", "'stray' stands after the switches"),
    ("x -M mask.png", "-M (inpainting mask) needs -I"),
    ("x --save_original", "needs -U"),
    ("a:0 b:0", "add up to 0"),
    ("x -V 42", "seed:weight"),
]


@pytest.mark.parametrize("line,message", ERRORS)
def test_bad_lines_get_one_line_that_names_the_problem(line, message):
    with pytest.raises(ParseError) as info:
        parse_request(line)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert "Traceback" not in text


def test_unsupported_is_never_called_unknown():
    for switch in ("-G 1", "-ft x", "-cf 1", "--embiggen 1", "-b 4", "-G0.8"):
        with pytest.raises(ParseError) as info:
            parse_request(f"a cat {switch}")
        assert "not supported" in str(info.value) and "unknown" not in str(info.value)


def test_comments_blanks_bang_commands_and_help():
    assert parse_line("") == Blank()
    assert parse_line("   ") == Blank()
    assert parse_line("# made on a Tuesday -S 3") == Blank()
    assert parse_line("!fetch outputs/000001.2.png") == BangCommand("fetch", "outputs/000001.2.png")
    assert parse_line("!replay my file.txt") == BangCommand("replay", "my file.txt")
    assert parse_line("a cat -h") == HelpRequest()
    assert parse_line("x --help") == HelpRequest()
