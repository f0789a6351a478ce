"""Negative prompts and weighted sub-prompts."""

import pytest

from dreamshell.line.prompt import PromptError, extract_negative, split_prompt


def test_negative_groups_are_collected():
    assert extract_negative("a cat [blurry] on a mat [dark, grainy]") == ("a cat on a mat", "blurry dark, grainy")


def test_weighted_subprompts_and_normalization():
    parts = split_prompt("a tabby cat:0.25 a white duck:0.75")
    assert parts.positive == (("a tabby cat", 0.25), ("a white duck", 0.75))
    assert split_prompt("a:1 b:3").normalized() == (("a", 0.25), ("b", 0.75))
    assert split_prompt("a:1 b:3").normalized(skip_normalize=True) == (("a", 1.0), ("b", 3.0))


def test_escaped_colon_is_literal():
    assert split_prompt("ratio 16\\:9 poster").positive == (("ratio 16:9 poster", 1.0),)
    assert split_prompt("a\\:b:0.5 c:0.5").positive == (("a:b", 0.5), ("c", 0.5))


def test_prompt_without_weights_is_one_part():
    parts = split_prompt("a red circle [blue]")
    assert parts.positive == (("a red circle", 1.0),) and parts.negative == "blue"


@pytest.mark.parametrize("prompt", ["a [b", "a ] b", "a:0 b:0"])
def test_bad_prompts_raise(prompt):
    with pytest.raises(PromptError):
        split_prompt(prompt)
