"""``--fail-if``: a tiny, safe expression language over the summary, for CI gates.

An expression names the fields of ``summary.json`` as a user sees them in the file (``pixel.loss``,
``ajax.ci95[1]``, ``timing.flagged``), so it is evaluated over the ``Summary``'s JSON form.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

import msgspec

from lossbench.contract.summary import Summary
from lossbench.contract.techniques import TECHNIQUES

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.BinOp,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Constant,
    *_COMPARE,
    *_BINARY,
)
# a hyphenated name used as a value (followed by "." or "["), not a subtraction such as "a.loss - b.loss"
_HYPHENATED = re.compile(r"(?<![\w.\-])([A-Za-z_]\w*(?:-[A-Za-z_]\w*)+)(?=\s*[.\[])")


def evaluate_fail_if(summary: Summary, expr: str) -> bool:
    """True when the CI condition holds, e.g. ``pixel.loss > 0.02 or pixel-keepalive.ci95[1] >= 0.5``.

    Names are techniques (their summary entries) or top-level summary keys (``phantoms``, ``timing``);
    fields are read with ``.`` and ``[i]``; comparisons, + − × ÷, ``and``/``or``/``not`` and number
    literals are the whole language. Parsed with ``ast`` and evaluated node by node: nothing is ``eval``-ed.
    Raises ValueError naming the problem (syntax, unknown name or field, null value).
    """
    aliases: dict[str, str] = {}

    def mangle(m: re.Match[str]) -> str:
        alias = f"__name{len(aliases)}__"
        aliases[alias] = m.group(1)
        return alias

    source = _HYPHENATED.sub(mangle, expr.strip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"--fail-if {expr!r}: not a valid expression ({e.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ValueError(
                f"--fail-if {expr!r}: {type(node).__name__} is not allowed; write comparisons of fields "
                "(pixel.loss > 0.02) joined by and/or"
            )
    value = _Evaluator(msgspec.to_builtins(summary), aliases, expr).eval(tree.body)
    if not isinstance(value, bool | int | float):
        raise ValueError(f"--fail-if {expr!r}: evaluates to {type(value).__name__}, not a condition")
    return bool(value)


class _Evaluator:
    """Walks the expression over the summary's JSON form (dicts, lists, numbers, strings, null)."""

    def __init__(self, summary: dict[str, Any], aliases: dict[str, str], expr: str) -> None:
        self.summary = summary
        self.aliases = aliases
        self.expr = expr

    def fail(self, message: str) -> ValueError:
        return ValueError(f"--fail-if {self.expr!r}: {message}")

    def name(self, ident: str) -> Any:
        name = self.aliases.get(ident, ident)
        techniques = self.summary["techniques"]
        if name in techniques:
            return techniques[name]
        if name in TECHNIQUES:
            raise self.fail(f"technique {name!r} is not in this run (it has: {', '.join(techniques)})")
        if name in self.summary and name != "techniques":
            return self.summary[name]
        others = [k for k in self.summary if k not in ("techniques", "schema")]
        raise self.fail(
            f"unknown name {name!r}; use a technique ({', '.join(techniques) or 'none in this run'}) "
            f"or one of {', '.join(others)}"
        )

    def eval(self, node: ast.AST) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=ident):
                return self.name(ident)
            case ast.Attribute(value=inner, attr=attr):
                obj = self.eval(inner)
                if not isinstance(obj, dict) or attr not in obj:
                    fields = ", ".join(obj) if isinstance(obj, dict) else "none"
                    raise self.fail(f"{self.text(inner)} has no field {attr!r} (fields: {fields})")
                return obj[attr]
            case ast.Subscript(value=inner, slice=index):
                obj, key = self.eval(inner), self.eval(index)
                try:
                    return obj[key]
                except (LookupError, TypeError):
                    raise self.fail(f"{self.text(inner)}[{key!r}] does not exist") from None
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self.eval(operand)
            case ast.UnaryOp(op=op, operand=operand):
                return self.number(operand) * (-1 if isinstance(op, ast.USub) else 1)
            case ast.BoolOp(op=op, values=values):
                if isinstance(op, ast.And):
                    return all(self.eval(v) for v in values)
                return any(self.eval(v) for v in values)
            case ast.BinOp(left=left, op=op, right=right):
                try:
                    return _BINARY[type(op)](self.number(left), self.number(right))
                except ZeroDivisionError:
                    raise self.fail(f"division by zero in {self.text(node)}") from None
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                a = self.eval(left)
                for cmp, right in zip(ops, comparators, strict=True):
                    b = self.eval(right)
                    try:
                        if not _COMPARE[type(cmp)](a, b):
                            return False
                    except TypeError:
                        raise self.fail(f"cannot compare {a!r} with {b!r} in {self.text(node)}") from None
                    a = b
                return True
        raise self.fail(f"{type(node).__name__} is not allowed")

    def number(self, node: ast.AST) -> float:
        value = self.eval(node)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{self.text(node)} is {value!r}, not a number")
        return value

    def text(self, node: ast.AST) -> str:
        source = ast.unparse(node)
        for alias, name in self.aliases.items():
            source = source.replace(alias, name)
        return source
