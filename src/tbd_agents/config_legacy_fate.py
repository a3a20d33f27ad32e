"""What becomes of a variable of the existing TBD Agents here (`Fate`), and the row of the table
that says it for one variable (`LegacyVariable`); see `tbd_agents.config_legacy`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Fate(StrEnum):
    WORKS = "works"
    RENAMED = "renamed"
    REFUSED = "refused"
    NO_EFFECT = "no effect"
    NOT_READ = "not read"


#: Characters per token used to convert the existing character budgets onto our token budgets
#: (the usual average for English text; our budgets are counted with the model's tokenizer).
CHARS_PER_TOKEN = 4


def chars_to_tokens(chars: int) -> int:
    return max(1, chars // CHARS_PER_TOKEN)


#: A converter gets the settings being built and the old variable's value and returns our
#: fields to set; it raises ValueError with a message naming the variables and the fix.
Convert = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LegacyVariable:
    name: str
    fate: Fate
    #: Our variable (WORKS: the same one; RENAMED: the one it is converted onto).
    target: str | None = None
    #: What differs (WORKS, RENAMED), why and what instead (REFUSED), why (NO_EFFECT, NOT_READ).
    note: str = ""
    #: RENAMED only: the conversion (default: the value as it is).
    convert: Convert | None = None
    #: What the documentation says it becomes, when "read as <target>" would not be right.
    label: str | None = None

    @property
    def field(self) -> str:
        """The `Settings` field that reads the variable."""
        return self.name.lower()
