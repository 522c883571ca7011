"""Policy as data (docs/policy.md): named rules an operator writes in a TOML file, checked against every
create's prompt and negative prompt at the door, before anything is read, fetched or queued.

```toml
[rules.weapons]
terms = ["assault rifle", "pipe bomb"]      # whole words or phrases, any case
patterns = ['\\bhow to make\\b.*\\bexplosive']  # regular expressions, any case
action = "refuse"                           # refuse (the default), or flag: allow it and mark the job
message = "Weapons are not generated on this server."
level = "low"                               # applies at every moderation level (default "auto")

[projects.kids-app]                         # a project, by name or id
rules = ["weapons", "violence"]             # only these rules apply to it (default: all)
extra_rules = ["everything-dark"]           # ... plus these, which apply to no one else
```

A rule with `only_projects = true` applies only to the projects that name it in `extra_rules`.
OpenAI's `moderation` maps onto `level`: `auto` (the default) applies every rule, `low` only the rules
with `level = "low"`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from easel.domain.errors import EaselError

Moderation = Literal["low", "auto"]


class PolicyViolation(EaselError):
    """A create refused by a policy rule: 400, code `content_policy_violation` (OpenAI's exact code),
    the rule's message (never the prompt)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message, [], 400, "content_policy_violation")
        self.rule = rule


class RuleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    action: Literal["refuse", "flag"] = "refuse"
    message: str = "This request was refused by the server's content policy."
    level: Moderation = "auto"
    only_projects: bool = False

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a regular expression: {e}") from e
        return v


class ProjectEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[str] | None = None
    extra_rules: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    message: str
    level: str
    only_projects: bool
    matcher: re.Pattern[str] | None

    def matches(self, text: str) -> bool:
        return self.matcher is not None and self.matcher.search(text) is not None


@dataclass(frozen=True)
class Verdict:
    """What the policy says of one request: the rule that refuses it (None: allowed) and the rules that
    flag it."""

    refused: Rule | None = None
    flagged: tuple[str, ...] = ()


@dataclass
class Policy:
    rules: dict[str, Rule] = field(default_factory=dict)
    projects: dict[str, ProjectEntry] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, origin: str = "policy") -> Policy:
        raw: dict[str, Any] = tomllib.loads(text)
        unknown = set(raw) - {"rules", "projects"}
        if unknown:
            raise ValueError(f"{origin}: unknown sections {sorted(unknown)} (rules, projects)")
        rules: dict[str, Rule] = {}
        for name, body in (raw.get("rules") or {}).items():
            try:
                entry = RuleEntry(**body)
            except ValidationError as e:
                raise ValueError(f"{origin}: rule {name!r}: {e}") from e
            alternatives = [rf"(?<!\w){re.escape(t)}(?!\w)" for t in entry.terms] + [
                f"(?:{p})" for p in entry.patterns
            ]
            matcher = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
            rules[name] = Rule(name, entry.action, entry.message, entry.level, entry.only_projects, matcher)
        projects: dict[str, ProjectEntry] = {}
        for name, body in (raw.get("projects") or {}).items():
            try:
                projects[name] = ProjectEntry(**body)
            except ValidationError as e:
                raise ValueError(f"{origin}: project {name!r}: {e}") from e
            missing = [
                r for r in [*(projects[name].rules or []), *projects[name].extra_rules] if r not in rules
            ]
            if missing:
                raise ValueError(f"{origin}: project {name!r} names unknown rules {missing}")
        return cls(rules, projects)

    @property
    def has_overrides(self) -> bool:
        return bool(self.projects)

    def rules_for(self, project: tuple[str, ...]) -> list[Rule]:
        """The rules that apply to a project, known by any of `project` (its id, its name)."""
        override = next((self.projects[p] for p in project if p in self.projects), None)
        if override is None:
            return [r for r in self.rules.values() if not r.only_projects]
        chosen = (
            override.rules
            if override.rules is not None
            else [n for n, r in self.rules.items() if not r.only_projects]
        )
        return [self.rules[n] for n in dict.fromkeys([*chosen, *override.extra_rules])]

    def check(self, texts: list[str], project: tuple[str, ...], moderation: Moderation = "auto") -> Verdict:
        """The verdict on a request's texts (prompt, negative prompt) for a project."""
        flagged: list[str] = []
        for rule in self.rules_for(project):
            if moderation == "low" and rule.level != "low":
                continue
            if any(rule.matches(t) for t in texts if t):
                if rule.action == "refuse":
                    return Verdict(rule, tuple(flagged))
                flagged.append(rule.name)
        return Verdict(None, tuple(flagged))
