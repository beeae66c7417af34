"""The prompt as configuration: the built-in template, TOML templates, their validation, and ranking's
fallback to plain scoring when a template's target comes before the user's fields."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.ml.model import ModelConfig, ModelError, load_base
from core.ml.prompts import BUILTIN, Catalog, PromptBuilder, PromptError, PromptTemplate, load_template
from core.ml.scoring import Scorer

CATALOG = Catalog({"i2": "Heat", "i5": "Alien"}, {"u1": {"age": "30", "gender": "F", "occupation": "writer"}})

SHOP = """
system = "You predict whether a shopper will click a product."
question = '''Shopper ({age}, {occupation}). Recently clicked: {history}.
Will they click "{target}"? Answer Yes or No.'''
history_item = "{title}"
history_separator = ", "
empty_history = "nothing yet"
history_len = 1
label_words = ["Yes", "No"]
"""

TARGET_FIRST = """
question = '''Product: "{target}". Shopper history: {history}. {profile} Click? Answer Yes or No.'''
"""


def _write(tmp_path: Path, text: str, name: str = "prompt.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_template_renders_the_prompt_adapters_were_trained_on(tiny_model) -> None:
    # the exact text of the built-in prompt before templates existed: existing adapters keep their meaning
    prefix, suffix = PromptBuilder(tiny_model.tokenizer, CATALOG).parts(
        "u1", [("i2", 4.0), ("i9", 2.5)], "i5"
    )
    assert prefix == (
        "<|im_start|>system\nYou predict whether a user will like a movie.<|im_end|>\n<|im_start|>user\n"
        "The user is a 30-year-old woman working as writer.\n"
        'Movies the user rated, oldest first (1-5 stars): "Heat" (4 stars); "item i9" (2.5 stars).\n'
        'Will the user like the movie "'
    )
    assert suffix == 'Alien"? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n'
    assert BUILTIN.shares_prefix


def test_a_template_file_words_the_prompt(tmp_path: Path, tiny_model) -> None:
    template = load_template(_write(tmp_path, SHOP))
    builder = PromptBuilder(tiny_model.tokenizer, CATALOG, template)
    prefix, suffix = builder.parts("u1", [("i9", 1.0), ("i2", 1.0)], "i5")
    assert "You predict whether a shopper will click a product." in prefix
    # profile columns by name, the history entry's own wording, only the latest history_len entries
    assert "Shopper (30, writer). Recently clicked: Heat.\n" in prefix and "item i9" not in prefix
    assert suffix.startswith('Alien"? Answer Yes or No.')
    empty, _ = builder.parts("u2", [], "i5")
    assert "Shopper (, ). Recently clicked: nothing yet." in empty
    assert template.shares_prefix


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('question = "{profile} {history}?"', r"needs \{target\} exactly once, found 0"),
        ('question = "{target} {target}"', r"needs \{target\} exactly once, found 2"),
        ('question = "{target} {salary}"', r"unknown field\(s\) \['salary'\]"),
        ('question = "{target} {0}"', r"field \{0\} must be a name"),
        ('question = "{target"', "not a valid format string"),
        ('history_item = "{title} {stars}"', r"history_item: unknown field\(s\) \['stars'\]"),
        ('history_item = "{rating:q}"', "history_item: cannot format an entry"),
        ('label_words = ["Yes", "Yes"]', "label_words: need two different non-empty words"),
        ('label_words = "Yes"', "label_words must be a list of two words"),
        ("history_len = 0", "history_len: must be >= 1"),
        ('prompt = "x"', r"unknown key\(s\) \['prompt'\]"),
        ("question = ", "not a TOML file"),
    ],
)
def test_a_bad_template_is_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PromptError, match=message) as error:
        load_template(path)
    assert str(path) in str(error.value)


def test_a_missing_template_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="prompt template not found"):
        load_template(tmp_path / "absent.toml")


def test_loading_the_model_checks_the_template_and_uses_its_label_words(tmp_path: Path, tiny_config) -> None:
    good = _write(tmp_path, 'label_words = ["yes", "no"]\n', "good.toml")
    loaded = load_base(replace(tiny_config, prompt_file=str(good)))
    assert [loaded.tokenizer.decode([i]) for i in loaded.label_ids] == ["yes", "no"]
    assert loaded.prompt.label_words == ("yes", "no")
    multi = _write(tmp_path, 'label_words = ["Absolutely certainly", "No"]\n', "multi.toml")
    with pytest.raises(ModelError, match="label word 'Absolutely certainly' is 3 tokens"):
        load_base(replace(tiny_config, prompt_file=str(multi)))
    with pytest.raises(PromptError, match="needs"):
        load_base(replace(tiny_config, prompt_file=str(_write(tmp_path, 'question = "x"', "bad.toml"))))
    assert load_base(ModelConfig(**{**tiny_config.to_dict(), "prompt_file": None})).prompt is BUILTIN


def test_a_target_first_template_ranks_with_plain_scoring(
    tmp_path: Path, tiny_model, small_data, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with caplog.at_level(logging.WARNING):
        template = load_template(_write(tmp_path, TARGET_FIRST))
    assert not template.shares_prefix and template.user_fields_after_target == ["history", "profile"]
    assert "cannot share the user's prefix: ranking falls back to plain scoring" in caplog.text
    catalog = Catalog.from_frames(small_data.items, small_data.users)
    scorer = Scorer(tiny_model, PromptBuilder(tiny_model.tokenizer, catalog, template), batch_size=4)
    plain_calls = []
    plain_score = scorer.score
    monkeypatch.setattr(scorer, "score", lambda frame: plain_calls.append(len(frame)) or plain_score(frame))
    history = [("i2", 4.0), ("i3", 1.0)]
    ranked = scorer.rank("u2", history, ["i4", "i5", "i6"], share_prefix=True)
    assert plain_calls == [3]
    assert ranked.shape == (3,) and np.all((ranked > 0) & (ranked < 1))
    # the built-in template still takes the shared path
    shared = Scorer(tiny_model, PromptBuilder(tiny_model.tokenizer, catalog), batch_size=4)
    monkeypatch.setattr(shared, "score", lambda frame: pytest.fail("the built-in template must share"))
    assert shared.rank("u2", history, ["i4", "i5"], share_prefix=True).shape == (2,)


def test_template_round_trips_through_a_dict() -> None:
    template = PromptTemplate(history_item="{title}", label_words=("yes", "no"), history_len=4)
    assert PromptTemplate.from_dict(template.to_dict()) == template
