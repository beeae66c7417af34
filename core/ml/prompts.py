"""Prompt building, and the prompt as configuration.

A ``PromptTemplate`` says how a sample becomes text: the system turn, the question (a ``str.format``
template with named fields), how one history entry reads, the label words and the history length.  The
built-in one (``BUILTIN``) renders exactly what this module rendered before templates existed, so adapters
trained on it keep their meaning; a deployment may load its own from a TOML file (``load_template``).

A prompt is rendered in two parts so that ranking can share work across candidates: ``prefix``
(everything before the target) and ``suffix`` (the target item's title, the rest of the question and the
chat template's assistant header).  Both the plain and the prefix-shared scorer tokenize the two parts
separately and concatenate the ids, so they see exactly the same tokens.  Sharing pays only when the user's
fields (profile, history) come before the target: a template that puts one after it is accepted, but ranks
with plain scoring (``PromptTemplate.shares_prefix``).
"""

from __future__ import annotations

import logging
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TARGET = "\x00TARGET\x00"
SYSTEM_PROMPT = "You predict whether a user will like a movie."
PROFILE_COLUMNS = ("age", "gender", "occupation")  # the profile columns a catalog carries
# the question's named fields: the described profile, the rendered history, the target's title, and each
# profile column by its own name
USER_FIELDS = frozenset({"profile", "history", *PROFILE_COLUMNS})
QUESTION_FIELDS = USER_FIELDS | {"target"}
HISTORY_ITEM_FIELDS = frozenset({"title", "rating", "item_id"})


class PromptError(ValueError):
    """A prompt template that cannot be used; the message names the file and the field."""


def _fields_of(text: str, where: str) -> list[str]:
    """The named fields of a ``str.format`` template, in order (PromptError for positional or bad ones)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:
        raise PromptError(f"{where}: not a valid format string ({error})") from None
    names = []
    for _literal, name, _spec, _conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise PromptError(f"{where}: field {{{name}}} must be a name such as {{history}}")
        names.append(name)
    return names


@dataclass(frozen=True)
class PromptTemplate:
    """How a sample is worded.

    ``question``: the user turn; fields ``{profile}`` (the built-in description of the profile),
    ``{history}``, ``{target}`` (exactly once) and the profile columns ``{age}``, ``{gender}``,
    ``{occupation}``.  ``history_item``: one history entry, fields ``{title}``, ``{rating}``, ``{item_id}``
    (format specs allowed, e.g. ``{rating:g}``); entries are joined by ``history_separator``, and an empty
    history reads ``empty_history``.  ``label_words``: (positive, negative) answers, one token each for the
    model's tokenizer (checked when the model loads).  ``history_len``: at most this many latest entries
    are shown (None: as many as the samples carry).
    """

    question: str = (
        "{profile}\n"
        "Movies the user rated, oldest first (1-5 stars): {history}.\n"
        'Will the user like the movie "{target}"? Answer Yes or No.'
    )
    system: str = SYSTEM_PROMPT
    history_item: str = '"{title}" ({rating:g} stars)'
    history_separator: str = "; "
    empty_history: str = "none"
    label_words: tuple[str, str] = ("Yes", "No")
    history_len: int | None = None

    def __post_init__(self) -> None:
        names = _fields_of(self.question, "question")
        unknown = sorted(set(names) - QUESTION_FIELDS)
        if unknown:
            raise PromptError(f"question: unknown field(s) {unknown}; known: {sorted(QUESTION_FIELDS)}")
        if names.count("target") != 1:
            raise PromptError(f"question: needs {{target}} exactly once, found {names.count('target')}")
        item_unknown = sorted(set(_fields_of(self.history_item, "history_item")) - HISTORY_ITEM_FIELDS)
        if item_unknown:
            raise PromptError(
                f"history_item: unknown field(s) {item_unknown}; known: {sorted(HISTORY_ITEM_FIELDS)}"
            )
        try:
            self.history_item.format(title="t", rating=1.0, item_id="i")
        except (ValueError, TypeError) as error:
            raise PromptError(f"history_item: cannot format an entry ({error})") from None
        words = tuple(self.label_words)
        if len(words) != 2 or not all(isinstance(w, str) and w for w in words) or words[0] == words[1]:
            raise PromptError(f"label_words: need two different non-empty words, got {self.label_words!r}")
        if self.history_len is not None and self.history_len < 1:
            raise PromptError(f"history_len: must be >= 1, got {self.history_len}")

    @property
    def user_fields_after_target(self) -> list[str]:
        """User fields the question places after ``{target}`` (none: the prefix can be shared)."""
        names = _fields_of(self.question, "question")
        return [n for n in names[names.index("target") + 1 :] if n in USER_FIELDS]

    @property
    def shares_prefix(self) -> bool:
        """Whether ranking can encode the user's part once for all candidates."""
        return not self.user_fields_after_target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "template") -> PromptTemplate:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PromptError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        given = dict(values)
        if "label_words" in given:
            if not isinstance(given["label_words"], list | tuple):
                raise PromptError(f"{where}: label_words must be a list of two words")
            given["label_words"] = tuple(given["label_words"])
        try:
            return cls(**given)
        except PromptError as error:
            raise PromptError(f"{where}: {error}") from None

    def render_history(self, history: Sequence[tuple[str, float]], catalog: Catalog) -> str:
        shown = history[-self.history_len :] if self.history_len else history
        entries = [
            self.history_item.format(title=catalog.title(item), rating=rating, item_id=item)
            for item, rating in shown
        ]
        return self.history_separator.join(entries) or self.empty_history

    def render_question(
        self, profile: Mapping[str, str] | None, history: Sequence[tuple[str, float]], catalog: Catalog
    ) -> str:
        """The user turn with a placeholder where the target title goes."""
        columns = {c: (profile or {}).get(c, "") for c in PROFILE_COLUMNS}
        return self.question.format(
            **columns,
            profile=describe_profile(profile),
            history=self.render_history(history, catalog),
            target=_TARGET,
        )


BUILTIN = PromptTemplate()  # the wording adapters trained before templates existed were trained on


def load_template(path: Path) -> PromptTemplate:
    """Read a TOML prompt template (keys: the fields of ``PromptTemplate``; missing ones keep the built-in
    value).  PromptError naming the file for anything that does not fit; a warning when the template must
    rank with plain scoring."""
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"{path}: prompt template not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PromptError(f"{path}: not a TOML file ({error})") from None
    template = PromptTemplate.from_dict(values, str(path))
    if not template.shares_prefix:
        log.warning(
            "%s: the question puts %s after {target}, so candidates cannot share the user's prefix: "
            "ranking falls back to plain scoring (each candidate encodes the whole prompt)",
            path,
            template.user_fields_after_target,
        )
    return template


@dataclass(frozen=True)
class Catalog:
    """Titles and profiles needed to render prompts."""

    titles: Mapping[str, str]
    profiles: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_frames(cls, items: Any, users: Any) -> Catalog:
        titles = dict(zip(items["item_id"], items["title"], strict=True))
        profiles = {
            str(row["user_id"]): {k: str(row.get(k, "")) for k in PROFILE_COLUMNS}
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


class PromptBuilder:
    """Turns (user, history, target) into (prefix, suffix) strings using the tokenizer's chat template."""

    def __init__(self, tokenizer: Any, catalog: Catalog, template: PromptTemplate = BUILTIN) -> None:
        self.catalog = catalog
        self.template = template
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
        self._tokenizer = tokenizer

    def _wrap(self, question: str) -> str:
        if not self._has_template:
            return f"{question}\nAnswer:"
        # a short system turn: the template's default one would cost ~20 tokens in every training sample
        messages = [
            {"role": "system", "content": self.template.system},
            {"role": "user", "content": question},
        ]
        text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    def user_prefix_and_template(self, user_id: str, history: Sequence[tuple[str, float]]) -> tuple[str, str]:
        """Returns (prefix, rest): the prompt is ``prefix + title + rest``."""
        question = self.template.render_question(self.catalog.profiles.get(user_id), history, self.catalog)
        prefix, _, rest = self._wrap(question).partition(_TARGET)
        return prefix, rest

    def parts(self, user_id: str, history: Sequence[tuple[str, float]], item_id: str) -> tuple[str, str]:
        prefix, rest = self.user_prefix_and_template(user_id, history)
        return prefix, self.catalog.title(item_id) + rest
