"""Guardrails: checks on the prompt, the request and the output, whose action is applied.

A `Guardrail` record becomes a compiled `Rule`. Its `guardrail_type` says where it applies
(`input`: the prompt; `request`: the request payload; `output`: the answer; `tool`: tool-call
arguments), `patterns` are regular expressions, and `prompt_config` holds the other checks:

    max_length / min_length   characters
    pii                       true (all kinds) or a list of: email, phone, credit_card, ssn, ipv4
    require_json              output must be valid JSON
    json_schema               request payload (or JSON output) must match this JSON Schema
    redaction                 replacement text (default "[REDACTED]")

Actions: `block` stops the run and the caller gets the guardrail's message instead of the text;
`redact` replaces the matched text (cuts to max_length; violations that cannot be redacted
— invalid JSON, schema mismatch, a timed-out pattern — block); `flag` lets the text through and
reports the violation. User patterns run with the `regex` module's time limit, so a pattern that
backtracks catastrophically cannot stall a run: a timeout counts as a violation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import regex

from tbd_agents.domain.enums import GuardrailAction, GuardrailType
from tbd_agents.domain.models import Guardrail
from tbd_agents.errors import InvalidData

#: Seconds one pattern may spend on one text.
PATTERN_TIMEOUT = 0.25
#: Inputs a new pattern is tried on at save time, to refuse catastrophic backtracking early.
_PROBES = ("a" * 3000 + "!", "0" * 3000 + "x", " " * 3000 + "\u00e9", "ab" * 1500 + "c")

PII_PATTERNS: dict[str, str] = {  # order matters: card numbers before phone numbers
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "credit_card": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
    "ssn": r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)",
    "phone": r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)",
    "ipv4": r"(?<!\d)(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d)",
}
_PII = {k: regex.compile(v) for k, v in PII_PATTERNS.items()}


def _luhn(digits: str) -> bool:
    nums = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(nums) <= 19:
        return False
    total = 0
    for i, n in enumerate(reversed(nums)):
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class Violation:
    guardrail: str
    action: GuardrailAction
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"guardrail": self.guardrail, "action": self.action.value, "reason": self.reason}


@dataclass(slots=True)
class Verdict:
    """The text the caller may receive, whether it is blocked, and every violation found."""

    text: str
    blocked: bool = False
    violations: list[Violation] = field(default_factory=list)

    @property
    def block_message(self) -> str:
        names = sorted({v.guardrail for v in self.violations if v.action is GuardrailAction.BLOCK})
        reasons = "; ".join(v.reason for v in self.violations if v.action is GuardrailAction.BLOCK)
        return f"Blocked by guardrail {', '.join(names)}: {reasons}"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: GuardrailType
    action: GuardrailAction
    patterns: tuple[Any, ...] = ()
    max_length: int | None = None
    min_length: int | None = None
    pii: tuple[str, ...] = ()
    require_json: bool = False
    json_schema: dict[str, Any] | None = None
    redaction: str = "[REDACTED]"


def _int_setting(cfg: dict[str, Any], key: str, name: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidData(f"guardrail {name!r}: prompt_config.{key} must be a whole number >= 0")
    return value


def _remote_refs(node: Any) -> Iterator[str]:
    """Every `$ref` in a JSON Schema that does not point inside the schema itself."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield value
            else:
                yield from _remote_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _remote_refs(item)


def compile_rule(g: Guardrail) -> Rule:
    """Compile and check a guardrail; raise InvalidData naming what to fix (used on save too)."""
    patterns = []
    for i, raw in enumerate(g.patterns):
        try:
            pat = regex.compile(raw)
        except regex.error as exc:
            raise InvalidData(
                f"guardrail {g.name!r}: pattern {i + 1} ({raw!r}) is not a valid regular expression: {exc}"
            ) from None
        for probe in _PROBES:
            try:
                pat.search(probe, timeout=PATTERN_TIMEOUT)
            except TimeoutError:
                raise InvalidData(
                    f"guardrail {g.name!r}: pattern {i + 1} ({raw!r}) takes too long on long inputs "
                    "(catastrophic backtracking, e.g. nested quantifiers like (a+)+); simplify it"
                ) from None
        patterns.append(pat)
    cfg = dict(g.prompt_config or {})
    pii_cfg = cfg.get("pii", False)
    if pii_cfg is True:
        pii = tuple(PII_PATTERNS)
    elif not pii_cfg:
        pii = ()
    elif isinstance(pii_cfg, list) and all(p in PII_PATTERNS for p in pii_cfg):
        pii = tuple(pii_cfg)
    else:
        raise InvalidData(
            f"guardrail {g.name!r}: prompt_config.pii must be true or a list of {', '.join(PII_PATTERNS)}"
        )
    schema = cfg.get("json_schema")
    if schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise InvalidData(
                f"guardrail {g.name!r}: prompt_config.json_schema is not a JSON Schema: {exc.message}"
            ) from None
        remote = next(_remote_refs(schema), None)
        if remote is not None:
            raise InvalidData(
                f"guardrail {g.name!r}: prompt_config.json_schema refers to {remote!r}; only "
                "references inside the schema itself ('#/…') are allowed (nothing is fetched)"
            )
    return Rule(
        name=g.name,
        kind=g.guardrail_type,
        action=g.action,
        patterns=tuple(patterns),
        max_length=_int_setting(cfg, "max_length", g.name),
        min_length=_int_setting(cfg, "min_length", g.name),
        pii=pii,
        require_json=bool(cfg.get("require_json", False)),
        json_schema=schema,
        redaction=str(cfg.get("redaction", "[REDACTED]")),
    )


def validate_guardrail(g: Guardrail) -> None:
    """What the API calls before saving a guardrail."""
    compile_rule(g)


class Guardrails:
    """The enabled guardrails of one run, grouped by where they apply."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)

    @classmethod
    def from_records(cls, records: Iterable[Guardrail]) -> Guardrails:
        return cls(compile_rule(g) for g in records if g.enabled)

    def _of(self, *kinds: GuardrailType) -> list[Rule]:
        return [r for r in self.rules if r.kind in kinds]

    @property
    def holds_output(self) -> bool:
        """True when output rules may change or block the answer (so it must not stream raw)."""
        return any(r.action is not GuardrailAction.FLAG for r in self._of(GuardrailType.OUTPUT))

    def check_input(self, text: str) -> Verdict:
        return _apply(self._of(GuardrailType.INPUT), text)

    def check_output(self, text: str) -> Verdict:
        return _apply(self._of(GuardrailType.OUTPUT), text)

    def check_tool_arguments(self, arguments: dict[str, Any]) -> Verdict:
        return _apply(self._of(GuardrailType.TOOL), json.dumps(arguments, ensure_ascii=False))

    def check_request(self, payload: dict[str, Any]) -> Verdict:
        verdict = Verdict(text="")
        for rule in self._of(GuardrailType.REQUEST):
            if rule.json_schema is None:
                continue
            try:
                jsonschema.validate(payload, rule.json_schema)
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "request"
                _record(
                    verdict,
                    rule,
                    f"request does not match the schema at {where}: {exc.message}",
                    hard=True,
                )
        return verdict


def _record(verdict: Verdict, rule: Rule, reason: str, *, hard: bool = False) -> None:
    """Note a violation; `hard` ones cannot be redacted, so redact acts as block."""
    action = rule.action
    if hard and action is GuardrailAction.REDACT:
        action = GuardrailAction.BLOCK
    verdict.violations.append(Violation(rule.name, action, reason))
    if action is GuardrailAction.BLOCK:
        verdict.blocked = True


def _apply(rules: Sequence[Rule], text: str) -> Verdict:
    verdict = Verdict(text=text)
    for rule in rules:
        _apply_rule(rule, verdict)
    if verdict.blocked:
        verdict.text = ""
    return verdict


def _apply_rule(rule: Rule, verdict: Verdict) -> None:
    redact = rule.action is GuardrailAction.REDACT
    for pat in rule.patterns:
        try:
            if pat.search(verdict.text, timeout=PATTERN_TIMEOUT) is None:
                continue
            _record(verdict, rule, f"matches pattern {pat.pattern!r}")
            if redact:
                verdict.text = pat.sub(rule.redaction, verdict.text, timeout=PATTERN_TIMEOUT)
        except TimeoutError:
            _record(
                verdict, rule, f"pattern {pat.pattern!r} timed out (treated as a match)", hard=True
            )
    for kind in rule.pii:
        found = [
            m
            for m in _PII[kind].finditer(verdict.text)
            if kind != "credit_card" or _luhn(m.group())
        ]
        if not found:
            continue
        _record(verdict, rule, f"contains {kind.replace('_', ' ')} ({len(found)})")
        if redact:
            for m in reversed(found):
                verdict.text = (
                    verdict.text[: m.start()] + f"[REDACTED:{kind}]" + verdict.text[m.end() :]
                )
    if rule.max_length is not None and len(verdict.text) > rule.max_length:
        _record(verdict, rule, f"longer than {rule.max_length} characters ({len(verdict.text)})")
        if redact:
            verdict.text = verdict.text[: rule.max_length]
    if rule.min_length is not None and len(verdict.text) < rule.min_length:
        _record(verdict, rule, f"shorter than {rule.min_length} characters", hard=True)
    if rule.require_json or (rule.json_schema is not None and rule.kind is GuardrailType.OUTPUT):
        try:
            value = json.loads(verdict.text)
        except json.JSONDecodeError as exc:
            _record(verdict, rule, f"not valid JSON ({exc.msg})", hard=True)
            return
        if rule.json_schema is not None:
            try:
                jsonschema.validate(value, rule.json_schema)
            except jsonschema.ValidationError as exc:
                _record(verdict, rule, f"JSON does not match the schema: {exc.message}", hard=True)
