"""Prompt building.

A prompt is rendered in two parts so that ranking can share work across candidates:
``prefix`` (everything about the user: profile and history, up to the target) and ``suffix`` (the target
item's title, the question's end and the chat template's assistant header).  Both the plain and the
prefix-shared scorer tokenize the two parts separately and concatenate the ids, so they see exactly the
same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TARGET = "\x00TARGET\x00"
SYSTEM_PROMPT = "You predict whether a user will like a movie."


@dataclass(frozen=True)
class Catalog:
    """Titles and profiles needed to render prompts."""

    titles: Mapping[str, str]
    profiles: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_frames(cls, items: Any, users: Any) -> Catalog:
        titles = dict(zip(items["item_id"], items["title"], strict=True))
        profiles = {
            str(row["user_id"]): {k: str(row.get(k, "")) for k in ("age", "gender", "occupation")}
            for row in users.to_dict("records")
        }
        return cls(titles=titles, profiles=profiles)

    def title(self, item_id: str) -> str:
        return self.titles.get(item_id, f"item {item_id}")


def describe_profile(profile: Mapping[str, str] | None) -> str:
    if not profile:
        return "The user has no profile."
    gender = {"M": "man", "F": "woman"}.get(profile.get("gender", ""), "person")
    age = profile.get("age", "")
    occupation = profile.get("occupation", "")
    parts = [f"{age}-year-old" if age else "", gender]
    text = "The user is a " + " ".join(p for p in parts if p)
    if occupation and occupation != "none":
        text += f" working as {occupation}"
    return text + "."


def render_question(
    profile: Mapping[str, str] | None, history: Sequence[tuple[str, float]], catalog: Catalog
) -> str:
    """The user turn with a placeholder where the target title goes."""
    rated = "; ".join(f'"{catalog.title(item)}" ({rating:g} stars)' for item, rating in history)
    return (
        f"{describe_profile(profile)}\n"
        f"Movies the user rated, oldest first (1-5 stars): {rated or 'none'}.\n"
        f'Will the user like the movie "{_TARGET}"? Answer Yes or No.'
    )


class PromptBuilder:
    """Turns (user, history, target) into (prefix, suffix) strings using the tokenizer's chat template."""

    def __init__(self, tokenizer: Any, catalog: Catalog) -> None:
        self.catalog = catalog
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
        self._tokenizer = tokenizer

    def _wrap(self, question: str) -> str:
        if not self._has_template:
            return f"{question}\nAnswer:"
        # a short system turn: the template's default one would cost ~20 tokens in every training sample
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    def user_prefix_and_template(self, user_id: str, history: Sequence[tuple[str, float]]) -> tuple[str, str]:
        """Returns (prefix, suffix_template); the suffix template has ``{title}`` for the target."""
        full = self._wrap(render_question(self.catalog.profiles.get(user_id), history, self.catalog))
        prefix, _, rest = full.partition(_TARGET)
        return prefix, rest

    def parts(self, user_id: str, history: Sequence[tuple[str, float]], item_id: str) -> tuple[str, str]:
        prefix, rest = self.user_prefix_and_template(user_id, history)
        return prefix, self.catalog.title(item_id) + rest
