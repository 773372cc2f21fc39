"""Split a data set's tests into what the sandbox runs and what the trusted parent checks.

    from rsft_gen.test_parse import parse_test, check_test
    p = parse_test("assert add(1, 2) == 3")
    p.calls                        # ['add(1, 2)']          runs in the sandbox, its value comes back as plain data
    check_test(p, [3])             # True                   the parent compares; 3 == 3
    parse_test("for x in range(3): assert f(x) == x").calls is None   # not a form we split: runs whole, in-sandbox

The expected values of a test never enter the sandboxed program's process: a
test such as `assert f(x) == y`, `assert math.isclose(f(x), y, rel_tol=...)`,
`assert f(x) is True`, `assert abs(f(x) - y) < 1e-6`, `assert set(f(x)) == {...}`
or HumanEval's `def check(candidate): assert candidate(...) == ...` followed by
`check(entry_point)` is cut into

- calls: the maximal sub-expressions that name something the solution defines
  (`f(x)`, `candidate(...)` renamed to the entry point). Only these, with their
  arguments, are sent to the sandbox;
- a parent expression over their values (`__v0 == 3`), evaluated here by a
  small interpreter that knows only literals, comparisons, arithmetic and a
  few pure builtins (`abs`, `len`, `sorted`, `set`, `math.isclose`, ...).

Values come back as tagged JSON (see `decode`), so they are plain ints, floats,
strings, lists, tuples, dicts and sets: no object from the program, and so no
`__eq__` that always says True, ever reaches the comparison. A test of any
other shape (loops, helper functions, comprehensions, names the test defines
itself) gets `calls=None` and runs whole inside the sandbox, a weaker mode
whose count `Result.unparsed` reports.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from functools import lru_cache

# Names the parent interpreter knows; anything else in a test belongs to the solution.
_FUNCS = {
    "abs": abs,
    "len": len,
    "sorted": sorted,
    "set": set,  # set, frozenset, dict and round get their arguments checked first: see _call
    "frozenset": frozenset,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "round": round,
    "sum": sum,
    "min": min,
    "max": max,
    "all": all,
    "any": any,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "isinstance": isinstance,
    "type": type,
    "reversed": reversed,
    "repr": repr,
}
_MATH = {
    "isclose": math.isclose,
    "fabs": math.fabs,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "inf": math.inf,
    "nan": math.nan,
    "pi": math.pi,
    "e": math.e,
}
_CONSTS = {"True": True, "False": False, "None": None}
_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_MAX_ITEMS = 10_000_000  # a parent-side `x * n` or `x ** n` larger than this is refused, not computed
_MAX_BITS = 1 << 22  # ... and so is int arithmetic past this many bits
_MAX_COLLISIONS = 1000  # hashable items that share a hash with another item in one set/dict (see _unflooded)


class Unparsed(Exception):
    """The test has a shape the parent does not split; it runs whole in the sandbox."""


@dataclass(frozen=True)
class ParsedTest:
    source: str
    calls: tuple[str, ...] | None  # sandbox expressions; None = run `source` whole in the sandbox (weak mode)
    checks: tuple[ast.expression, ...] = ()  # parent expressions over __v0, __v1, ... (all must be truthy)


@lru_cache(maxsize=4096)
def parse_test(source: str) -> ParsedTest:
    """Cut one test snippet (one or more statements) into sandbox calls and parent checks."""
    try:
        tree = ast.parse(source)
        calls, checks = _Splitter().module(tree)
    except Exception:  # Unparsed, SyntaxError, RecursionError, an error in a test constant, ...
        return ParsedTest(source, None)
    return ParsedTest(source, tuple(calls), tuple(checks))


def check_test(test: ParsedTest, values: list) -> bool:
    """True when every check of `test` holds for the calls' decoded values (a call that raised is `Raised`)."""
    env = {f"__v{i}": v for i, v in enumerate(values)}
    for expr in test.checks:
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        if any(isinstance(env.get(n), Raised) for n in names):
            return False  # a call the check needs raised: the assert would have raised too
        try:
            if not _eval(expr.body, env):
                return False
        except Exception:  # TypeError on mismatched plain values, ZeroDivisionError, ...
            return False
    return True


class _Splitter:
    """Walk a test module: constants (METADATA, `x = [1, 2]`) are bound in the parent; asserts are split."""

    def __init__(self):
        self.consts: dict[str, object] = {}
        self.calls: list[str] = []
        self.checks: list[ast.expression] = []
        self.rename: dict[str, str] = {}

    def module(self, tree: ast.Module):
        body = list(tree.body)
        checkers, called = {}, set()
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef):
                checkers[stmt.name] = stmt
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef):
                continue  # a HumanEval `check` runs where it is called
            if (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name)
                and stmt.value.func.id in checkers
            ):
                self.call_checker(checkers[stmt.value.func.id], stmt.value)
                called.add(stmt.value.func.id)
            else:
                self.statement(stmt)
        if set(checkers) - called:  # a helper the asserts use: only the sandbox, which runs the whole test, knows it
            raise Unparsed("helper function")
        if not self.checks:
            raise Unparsed("no assert")
        return self.calls, self.checks

    def call_checker(self, fn: ast.FunctionDef, call: ast.Call):
        params = [a.arg for a in fn.args.args]
        if (
            call.keywords
            or len(call.args) != len(params)
            or fn.args.vararg
            or fn.args.kwarg
            or fn.decorator_list
            or not all(isinstance(a, ast.Name) for a in call.args)
        ):
            raise Unparsed("checker call")
        outer = (dict(self.consts), dict(self.rename))
        for p, a in zip(params, call.args):  # check(candidate) with check(has_close_elements): candidate -> that name
            self.consts.pop(p, None)
            self.rename[p] = self.rename.get(a.id, a.id)
        for stmt in fn.body:
            self.statement(stmt)
        self.consts, self.rename = outer

    def statement(self, stmt: ast.stmt):
        if isinstance(stmt, ast.Assert):
            self.assert_(stmt.test)  # the message is only shown on failure: never evaluated
        elif isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            pass  # docstrings, `pass`
        elif isinstance(stmt, ast.Import) and all(a.name == "math" and a.asname is None for a in stmt.names):
            pass  # the parent knows math
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and not self.foreign(stmt.value)
        ):
            name = stmt.targets[0].id
            self.consts[name] = _eval(self.resolve(stmt.value), {})
            self.rename.pop(name, None)
        else:
            raise Unparsed(type(stmt).__name__)

    def assert_(self, expr: ast.expr):
        out = self.split(expr)
        self.checks.append(ast.fix_missing_locations(ast.Expression(out)))

    def foreign(self, node: ast.AST) -> bool:
        """Does `node` mention a name the parent does not know (so the solution defines it)?"""
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and (
                n.id in self.rename or not (n.id in _FUNCS or n.id in _CONSTS or n.id == "math" or n.id in self.consts)
            ):
                return True
            if isinstance(
                n,
                (
                    ast.Lambda,
                    ast.ListComp,
                    ast.SetComp,
                    ast.DictComp,
                    ast.GeneratorExp,
                    ast.NamedExpr,
                    ast.Await,
                    ast.Yield,
                    ast.YieldFrom,
                    ast.JoinedStr,
                    ast.Starred,
                ),
            ):
                raise Unparsed(type(n).__name__)
        return False

    def split(self, node: ast.expr) -> ast.expr:
        """The parent's part of `node`, with each solution sub-expression replaced by a placeholder __vN."""
        if not self.foreign(node):
            return self.resolve(node)
        if isinstance(node, ast.Call) and _known_func(node.func):
            return ast.Call(
                node.func,
                [self.split(a) for a in node.args],
                [ast.keyword(k.arg, self.split(k.value)) for k in node.keywords],
            )
        if isinstance(
            node,
            (
                ast.Compare,
                ast.BoolOp,
                ast.BinOp,
                ast.UnaryOp,
                ast.IfExp,
                ast.Tuple,
                ast.List,
                ast.Set,
                ast.Dict,
                ast.Subscript,
                ast.Slice,
            ),
        ):
            copy = ast.parse(ast.unparse(node), mode="eval").body  # a fresh node to rebuild
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.expr):
                    setattr(copy, field, self.split(value))
                elif isinstance(value, list):
                    setattr(copy, field, [self.split(v) if isinstance(v, ast.expr) else v for v in value])
            return copy
        return self.sandbox(node)

    def sandbox(self, node: ast.expr) -> ast.expr:
        """Send `node` to the sandbox: checker parameters renamed, the test's own constants inlined as literals."""
        node = _Inline(self.rename, self.consts).visit(ast.parse(ast.unparse(node), mode="eval").body)
        self.calls.append(ast.unparse(node))
        return ast.Name(f"__v{len(self.calls) - 1}", ast.Load())

    def resolve(self, node: ast.expr) -> ast.expr:
        return _Inline({}, self.consts).visit(ast.parse(ast.unparse(node), mode="eval").body)


class _Inline(ast.NodeTransformer):
    def __init__(self, rename: dict[str, str], consts: dict[str, object]):
        self.rename, self.consts = rename, consts

    def visit_Name(self, node: ast.Name):
        if node.id in self.rename:
            return ast.Name(self.rename[node.id], ast.Load())
        if node.id in self.consts:
            literal = repr(self.consts[node.id])
            try:
                if ast.literal_eval(literal) != self.consts[node.id]:
                    raise ValueError
            except (ValueError, SyntaxError, TypeError):
                raise Unparsed(f"constant {node.id}") from None
            return ast.parse(literal, mode="eval").body
        return node


def _known_func(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in _FUNCS
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "math"
        and func.attr in _MATH
    )


def _eval(node: ast.expr, env: dict):
    """Evaluate a parent expression over plain values; only the constructs listed here exist."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        if node.id in _FUNCS:
            return _FUNCS[node.id]
        raise Unparsed(node.id)
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _MATH:
            return _MATH[node.attr]
        raise Unparsed("attribute")
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_eval(e, env) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise Unparsed("dict unpacking")
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval(node.left, env), _eval(node.right, env)
        _guard_size(node.op, a, b)
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.BoolOp):
        value = None
        for v in node.values:
            value = _eval(v, env)
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    if isinstance(node, ast.Slice):
        return slice(*(None if n is None else _eval(n, env) for n in (node.lower, node.upper, node.step)))
    if isinstance(node, ast.Call) and _known_func(node.func):
        kwargs = {k.arg: _eval(k.value, env) for k in node.keywords}
        return _call(_eval(node.func, env), [_eval(a, env) for a in node.args], kwargs)
    raise Unparsed(type(node).__name__)


def _call(fn, args: list, kwargs: dict):
    """A known function on values that may come from the program, refusing calls that would take minutes."""
    if fn in (set, frozenset, dict) and len(args) == 1:
        items = args[0].items() if fn is dict and isinstance(args[0], dict) else args[0]
        args = [_unflooded(items, pairs=fn is dict)]
    if fn is round and any(isinstance(n, int) and abs(n) > 10_000 for n in args[1:] + list(kwargs.values())):
        raise OverflowError("round() with that many digits")  # round(x, -10**9) computes 10**(10**9)
    return fn(*args, **kwargs)


def _guard_size(op: ast.operator, a, b) -> None:
    """Refuse parent-side arithmetic that would build something huge or take minutes (the values may come from the
    program: an 8 MiB result holds a 32-million-bit int, and CPython multiplies and divides such ints in
    superlinear time)."""
    if isinstance(a, int) and isinstance(b, int):
        small, big = sorted((abs(a).bit_length(), abs(b).bit_length()))
        if isinstance(op, ast.Pow) and abs(a) > 1 and (b > 10_000 or big * max(b, 0) > _MAX_BITS):
            raise OverflowError("exponent too large")
        if isinstance(op, (ast.Mult, ast.FloorDiv, ast.Mod)) and small > 64 and big > _MAX_BITS // 16:
            raise OverflowError("operands too large")
    if isinstance(op, ast.Mult):
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_ITEMS:
                raise OverflowError("repetition too large")


class Raised:
    """A call that raised in the sandbox: equal to nothing; any check that uses it fails."""

    def __init__(self, error: str):
        self.error = error

    def __repr__(self):
        return f"Raised({self.error!r})"


class Opaque:
    """A value of a type that has no plain-data form (a class instance, a generator): equal only to itself."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self):
        return f"<{self.type_name} {self.text}>"


def _unflooded(items=(), pairs=False):
    """`items` as a list, refused (ValueError) when many of them share hash values. A set or dict of n colliding
    keys takes n**2 / 2 comparisons to build: a program that returns 300,000 ints equal modulo 2**61 - 1 (or
    forges a result holding them) would hold the parent for half an hour. Genuine values almost never collide."""
    items = list(items)
    if len(items) > _MAX_COLLISIONS:
        keys = [k for k, _ in items] if pairs else items
        if len(keys) - len({hash(k) for k in keys}) > _MAX_COLLISIONS:
            raise ValueError("too many equal hashes to build a set or dict from")
    return items


def decode(v):
    """Tagged JSON from the sandbox -> plain Python values (see sandbox_harness.encode)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if not isinstance(v, list) or not v or not isinstance(v[0], str):
        raise ValueError(f"not a tagged value: {v!r:.80}")
    tag, rest = v[0], v[1:]
    if tag == "f":
        return float(rest[0])
    if tag == "i":
        return int(rest[0], 16)
    if tag == "c":
        return complex(float(rest[0]), float(rest[1]))
    if tag == "y":
        return bytes.fromhex(rest[0])
    if tag == "l":
        return [decode(x) for x in rest]
    if tag == "t":
        return tuple(decode(x) for x in rest)
    if tag == "s":
        return set(_unflooded(decode(x) for x in rest))
    if tag == "fs":
        return frozenset(_unflooded(decode(x) for x in rest))
    if tag == "d":
        return dict(_unflooded(((decode(k), decode(x)) for k, x in rest), pairs=True))
    if tag == "o":
        return Opaque(str(rest[0])[:100], str(rest[1])[:200])
    raise ValueError(f"unknown tag {tag!r}")
