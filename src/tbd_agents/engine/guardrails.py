"""Guardrails: checks on the prompt, the request and the output, whose action is applied.

A `Guardrail` record becomes a compiled `Rule`. Its `guardrail_type` says where it applies
(`input` and `prompt`: the user's prompt; `request`: the structured request body; `output`: the
answer; `tool`: tool-call arguments). `patterns` are regular expressions (case-sensitive unless
they say `(?i)`), and `prompt_config` holds the other checks, for every type:

    max_length / min_length   characters
    pii                       true (all kinds) or a list of: email, phone, credit_card, ssn, ipv4
    require_json              output must be valid JSON
    json_schema               request payload (or JSON output) must match this JSON Schema
    redaction                 replacement text of a `redact` guardrail, for pattern matches and
                              PII alike (default: "[REDACTED]" for a pattern match,
                              "[REDACTED:<kind>]" for PII, e.g. "[REDACTED:credit_card]");
                              an output guardrail may also set it in output_config

The blocks of the existing TBD Agents are read as they were written (see `compile_rule`):

    prompt_config  {forbidden_patterns[], required_patterns[], max_length?, min_length?}
    request_config {json_schema}   (type request; draft-07 unless the schema names its draft)
    output_config  {forbidden_patterns[], required_patterns[], max_length?, pii_detection,
                    must_be_valid_json}   (type output; pii_detection = email, phone, ssn)

Their patterns match case-insensitively, as they did; a required pattern that does not match is
a violation. A request-config guardrail needs a structured request (the request dict, or a
prompt that is the JSON of one, which is what a run started with a request carries).

Actions: `block` stops the run and the caller gets the guardrail's message instead of the text;
`redact` replaces the matched text (cuts to max_length; violations that cannot be redacted
— invalid JSON, schema mismatch, a missing required pattern, a timed-out pattern — block);
`flag` lets the text through and reports the violation. The existing system only reported
output violations and let the answer through (a defect, not reproduced): a stored output
guardrail has the default action `block`; set `action: flag` for report-only. User patterns run
with the `regex` module's time limit, so a pattern that backtracks catastrophically cannot stall
a run: a timeout counts as a violation.

On save (`validate_guardrail`) a guardrail whose config block belongs to another type, or that
lacks the block its type reads, is refused naming the fix; a stored one in that state still
loads (`Guardrails.from_records`): the missing block is no constraint, and it is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.validators
import regex

from tbd_agents.domain.enums import GuardrailAction, GuardrailType
from tbd_agents.domain.models import Guardrail
from tbd_agents.errors import InvalidData
from tbd_agents.observability.engine_signals import guardrail_checked
from tbd_agents.observability.spans import span

log = logging.getLogger(__name__)

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
#: What the existing system's `output_config.pii_detection` looked for.
EXISTING_PII = ("email", "phone", "ssn")

#: The config blocks of the existing system and the one type that reads each.
_TYPED_BLOCKS = {"request_config": GuardrailType.REQUEST, "output_config": GuardrailType.OUTPUT}
_BLOCK_SHAPES = {
    GuardrailType.PROMPT: "prompt_config {forbidden_patterns, required_patterns, max_length, "
    "min_length}",
    GuardrailType.REQUEST: "request_config {json_schema}",
    GuardrailType.OUTPUT: "output_config {forbidden_patterns, required_patterns, max_length, "
    "pii_detection, must_be_valid_json}",
}


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
    #: Forbidden patterns: a match is a violation (redacted under `redact`).
    patterns: tuple[Any, ...] = ()
    #: Required patterns: each must match somewhere, or it is a violation.
    required: tuple[Any, ...] = ()
    max_length: int | None = None
    min_length: int | None = None
    pii: tuple[str, ...] = ()
    require_json: bool = False
    #: Our `prompt_config.json_schema`: the request (or `{"prompt": …}`), or JSON output.
    json_schema: dict[str, Any] | None = None
    #: The existing `request_config.json_schema`: a structured request must match it.
    request_schema: dict[str, Any] | None = None
    #: The guardrail's own replacement text (`redaction`); None: the defaults (module doc).
    redaction: str | None = None

    def replacement(self, pii_kind: str | None = None) -> str:
        """What a `redact` action writes in place of a match (of PII of `pii_kind`)."""
        if self.redaction is not None:
            return self.redaction
        return f"[REDACTED:{pii_kind}]" if pii_kind else "[REDACTED]"


def _int_setting(cfg: dict[str, Any], key: str, name: str, block: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidData(f"guardrail {name!r}: {block}.{key} must be a whole number >= 0")
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


def _compile_patterns(name: str, raws: Any, where: str, *, ignore_case: bool) -> list[Any]:
    """Compiled patterns of `where` (a list of strings), each tried on adversarial inputs."""
    if raws is None:
        return []
    if not isinstance(raws, list) or not all(isinstance(r, str) for r in raws):
        raise InvalidData(f"guardrail {name!r}: {where} must be a list of regular expressions")
    flags = regex.IGNORECASE if ignore_case else 0
    out = []
    for i, raw in enumerate(raws):
        try:
            pat = regex.compile(raw, flags)
        except regex.error as exc:
            raise InvalidData(
                f"guardrail {name!r}: {where} {i + 1} ({raw!r}) is not a valid regular "
                f"expression: {exc}"
            ) from None
        for probe in _PROBES:
            try:
                pat.search(probe, timeout=PATTERN_TIMEOUT)
            except TimeoutError:
                raise InvalidData(
                    f"guardrail {name!r}: {where} {i + 1} ({raw!r}) takes too long on long "
                    "inputs (catastrophic backtracking, e.g. nested quantifiers like (a+)+); "
                    "simplify it"
                ) from None
        out.append(pat)
    return out


def _checked_schema(name: str, schema: Any, where: str, default: Any) -> dict[str, Any]:
    """`schema` if it is a JSON Schema (of its `$schema` draft, else `default`) with only
    references inside itself; InvalidData naming `where` otherwise."""
    if not isinstance(schema, dict):
        raise InvalidData(f"guardrail {name!r}: {where} must be a JSON Schema object")
    validator = jsonschema.validators.validator_for(schema, default=default)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidData(
            f"guardrail {name!r}: {where} is not a JSON Schema: {exc.message}"
        ) from None
    remote = next(_remote_refs(schema), None)
    if remote is not None:
        raise InvalidData(
            f"guardrail {name!r}: {where} refers to {remote!r}; only references inside the "
            "schema itself ('#/…') are allowed (nothing is fetched)"
        )
    return schema


def _block(g: Guardrail, name: str) -> dict[str, Any]:
    """A config block as a dict ({} when absent; InvalidData when it is not an object)."""
    value = getattr(g, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidData(f"guardrail {g.name!r}: {name} must be a JSON object")
    return value


def block_problem(g: Guardrail) -> str | None:
    """Why the guardrail's config blocks do not fit its type (None when they do): a block of
    another type's, or, for the existing types, none of the blocks the type reads."""
    kind = g.guardrail_type
    for block, owner in _TYPED_BLOCKS.items():
        if getattr(g, block) is not None and kind is not owner:
            return (
                f"guardrail {g.name!r}: {block} applies to guardrail_type {owner.value!r}, and "
                f"this guardrail is {kind.value!r}: remove {block} or change guardrail_type"
            )
    return missing_block(g)


def missing_block(g: Guardrail) -> str | None:
    """For `prompt`, `request` and `output` guardrails without the block their type reads (nor
    our own `patterns` / `prompt_config` equivalent): what to add. None otherwise."""
    kind = g.guardrail_type
    own = g.prompt_config is not None or bool(g.patterns)
    if kind is GuardrailType.PROMPT:
        present = own
    elif kind is GuardrailType.REQUEST:
        present = g.request_config is not None or bool((g.prompt_config or {}).get("json_schema"))
    elif kind is GuardrailType.OUTPUT:
        present = g.output_config is not None or own
    else:
        return None
    if present:
        return None
    return f"guardrail {g.name!r} ({kind.value}) has no checks: set {_BLOCK_SHAPES[kind]}"


def compile_rule(g: Guardrail) -> Rule:
    """Compile and check a guardrail; raise InvalidData naming what to fix (used on save too).

    Reads `patterns` and `prompt_config` for every type (our keys and the existing
    forbidden/required patterns), `output_config` for output guardrails and `request_config`
    for request guardrails; a block of another type is ignored here (refused on save)."""
    cfg = _block(g, "prompt_config")
    out_cfg = _block(g, "output_config") if g.guardrail_type is GuardrailType.OUTPUT else {}
    req_cfg = _block(g, "request_config") if g.guardrail_type is GuardrailType.REQUEST else {}
    patterns = _compile_patterns(g.name, list(g.patterns), "pattern", ignore_case=False)
    required: list[Any] = []
    for block, values in (("prompt_config", cfg), ("output_config", out_cfg)):
        patterns += _compile_patterns(
            g.name, values.get("forbidden_patterns"), f"{block}.forbidden_patterns",
            ignore_case=True,
        )  # fmt: skip
        required += _compile_patterns(
            g.name, values.get("required_patterns"), f"{block}.required_patterns",
            ignore_case=True,
        )  # fmt: skip
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
    if out_cfg.get("pii_detection"):
        pii = tuple(dict.fromkeys((*pii, *EXISTING_PII)))
    schema = cfg.get("json_schema")
    if schema is not None:
        schema = _checked_schema(
            g.name, schema, "prompt_config.json_schema", jsonschema.Draft202012Validator
        )
    request_schema = req_cfg.get("json_schema")
    if request_schema is not None:
        request_schema = _checked_schema(
            g.name, request_schema, "request_config.json_schema", jsonschema.Draft7Validator
        )
    max_length = _int_setting(out_cfg, "max_length", g.name, "output_config")
    if max_length is None:
        max_length = _int_setting(cfg, "max_length", g.name, "prompt_config")
    return Rule(
        name=g.name,
        kind=g.guardrail_type,
        action=g.action,
        patterns=tuple(patterns),
        required=tuple(required),
        max_length=max_length,
        min_length=_int_setting(cfg, "min_length", g.name, "prompt_config"),
        pii=pii,
        require_json=bool(cfg.get("require_json", False) or out_cfg.get("must_be_valid_json")),
        json_schema=schema,
        request_schema=request_schema,
        redaction=_redaction(g.name, out_cfg, cfg),
    )


def _redaction(name: str, *blocks: dict[str, Any]) -> str | None:
    """The `redaction` text of the first block that sets one (None: the defaults)."""
    for block in blocks:
        value = block.get("redaction")
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise InvalidData(f"guardrail {name!r}: redaction must be a text (the replacement)")
        return str(value)
    return None


def validate_guardrail(g: Guardrail) -> None:
    """What the API calls before saving a guardrail: the blocks fit the type, and compile."""
    problem = block_problem(g)
    if problem is not None:
        raise InvalidData(problem, details={"field": "guardrail_type"})
    request_config = g.request_config if g.guardrail_type is GuardrailType.REQUEST else None
    if request_config is not None and request_config.get("json_schema") is None:
        raise InvalidData(
            f"guardrail {g.name!r}: request_config needs json_schema (a JSON Schema object)",
            details={"field": "request_config"},
        )
    compile_rule(g)


class Guardrails:
    """The enabled guardrails of one run, grouped by where they apply."""

    def __init__(self, rules: Iterable[Rule], warnings: Iterable[str] = ()) -> None:
        self.rules = list(rules)
        #: Stored guardrails that loaded with a missing block (reported with the run).
        self.warnings = list(warnings)

    @classmethod
    def from_records(cls, records: Iterable[Guardrail]) -> Guardrails:
        """Rules of the enabled records. A record missing the block its type reads (saved
        before that was checked, or written to the database directly) loads as no
        constraint, logged and kept in `warnings`; it never stops the run."""
        rules: list[Rule] = []
        warnings: list[str] = []
        for g in records:
            if not g.enabled:
                continue
            missing = missing_block(g)
            if missing is not None:
                log.warning("%s; it checks nothing until fixed", missing)
                warnings.append(f"{missing}; it checks nothing until fixed")
            rules.append(compile_rule(g))
        return cls(rules, warnings)

    def _of(self, *kinds: GuardrailType) -> list[Rule]:
        return [r for r in self.rules if r.kind in kinds]

    @property
    def holds_output(self) -> bool:
        """True when output rules may change or block the answer (so it must not stream raw)."""
        return any(r.action is not GuardrailAction.FLAG for r in self._of(GuardrailType.OUTPUT))

    @property
    def checks_prompt(self) -> list[str]:
        """Names of the rules that check the prompt text (`input` and `prompt`)."""
        return [r.name for r in self._of(GuardrailType.INPUT, GuardrailType.PROMPT)]

    def check_input(self, text: str, *, structured: bool = False) -> Verdict:
        """The user's prompt, against `input` and `prompt` guardrails. `structured`: the text
        is the JSON of a structured request, which the existing `prompt` guardrails never saw
        (they checked the prompt sent beside it, before the run): only `input` ones apply."""
        kinds = (
            (GuardrailType.INPUT,) if structured else (GuardrailType.INPUT, GuardrailType.PROMPT)
        )
        return _checked("input", self._of(*kinds), text)

    def check_output(self, text: str) -> Verdict:
        return _checked("output", self._of(GuardrailType.OUTPUT), text)

    def check_tool_arguments(self, arguments: dict[str, Any]) -> Verdict:
        text = json.dumps(arguments, ensure_ascii=False)
        return _checked("tool", self._of(GuardrailType.TOOL), text)

    def check_request(self, request: dict[str, Any] | None, prompt: str = "") -> Verdict:
        """The structured request against `request` guardrails.

        Our `prompt_config.json_schema` checks `request`, or `{"prompt": prompt}` without one.
        The existing `request_config.json_schema` needs a request: `request`, or else a prompt
        that is the JSON of an object (a run started with a request carries it so)."""
        rules = self._of(GuardrailType.REQUEST)
        if not rules:
            return Verdict(text="")
        with span("guardrail request", {"tbd.guardrail.stage": "request"}) as current:
            verdict = self._check_request(rules, request, prompt)
            guardrail_checked("request", verdict, current)
        return verdict

    def _check_request(
        self, rules: list[Rule], request: dict[str, Any] | None, prompt: str
    ) -> Verdict:
        verdict = Verdict(text="")
        for rule in rules:
            if rule.json_schema is not None:
                payload = request if request is not None else {"prompt": prompt}
                _check_schema(
                    verdict, rule, payload, rule.json_schema, jsonschema.Draft202012Validator
                )
            if rule.request_schema is not None:
                structured = request if request is not None else _json_object(prompt)
                if structured is None:
                    _record(
                        verdict,
                        rule,
                        "needs a structured request: send `request` (a JSON object)",
                        hard=True,
                    )
                    continue
                _check_schema(
                    verdict, rule, structured, rule.request_schema, jsonschema.Draft7Validator
                )
        return verdict


@dataclass(slots=True)
class GuardedPrompt:
    """A prompt after the request and input guardrails (`guard_prompt`)."""

    #: What the model receives (redacted where a `redact` guardrail matched).
    text: str
    #: The request verdict, then the input verdict.
    verdicts: tuple[Verdict, ...]

    @property
    def blocking(self) -> Verdict | None:
        """The first verdict that blocks, if any."""
        return next((v for v in self.verdicts if v.blocked), None)


def guard_prompt(
    rails: Guardrails, prompt: str, request: dict[str, Any] | None = None
) -> GuardedPrompt:
    """Apply the `request` guardrails to `request` and the `input` / `prompt` ones to `prompt`
    (only `input` ones when `prompt` is the JSON of `request`: `check_input`). Entry points
    call it before they store a prompt, so what they store is what the model will see, and
    hand the result to the run (`RunInput.guarded`), which then does not check again."""
    request_verdict = rails.check_request(request, prompt)
    input_verdict = rails.check_input(prompt, structured=request is not None)
    return GuardedPrompt(input_verdict.text, (request_verdict, input_verdict))


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _check_schema(
    verdict: Verdict, rule: Rule, payload: Any, schema: dict[str, Any], default: Any
) -> None:
    """Record the best-matching schema error of `payload` (`default`: the draft of schemas that
    do not name theirs)."""
    validator = jsonschema.validators.validator_for(schema, default=default)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "request"
        _record(
            verdict,
            rule,
            f"request does not match the schema at {where}: {error.message}",
            hard=True,
        )


def _record(verdict: Verdict, rule: Rule, reason: str, *, hard: bool = False) -> None:
    """Note a violation; `hard` ones cannot be redacted, so redact acts as block."""
    action = rule.action
    if hard and action is GuardrailAction.REDACT:
        action = GuardrailAction.BLOCK
    verdict.violations.append(Violation(rule.name, action, reason))
    if action is GuardrailAction.BLOCK:
        verdict.blocked = True


def _checked(stage: str, rules: Sequence[Rule], text: str) -> Verdict:
    """`_apply`, counted and traced (`tbd_guardrail_checks_total`, a `guardrail <stage>` span)
    when there is a rule to check: a run without guardrails reports no checks."""
    if not rules:
        return _apply(rules, text)
    with span(f"guardrail {stage}", {"tbd.guardrail.stage": stage}) as current:
        verdict = _apply(rules, text)
        guardrail_checked(stage, verdict, current)
    return verdict


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
                # backslashes doubled: the text is written as it is (no \1 or \g<> expansion)
                text = rule.replacement().replace("\\", "\\\\")
                verdict.text = pat.sub(text, verdict.text, timeout=PATTERN_TIMEOUT)
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
                    verdict.text[: m.start()] + rule.replacement(kind) + verdict.text[m.end() :]
                )
    for pat in rule.required:
        try:
            if pat.search(verdict.text, timeout=PATTERN_TIMEOUT) is None:
                _record(
                    verdict, rule, f"does not match required pattern {pat.pattern!r}", hard=True
                )
        except TimeoutError:
            _record(verdict, rule, f"required pattern {pat.pattern!r} timed out", hard=True)
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
