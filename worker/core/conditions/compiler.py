"""The compiler of the condition language: whitelisted syntax, checked kinds, closures.

Every syntax node is checked against a whitelist and every operand against the kinds the
:class:`~worker.core.conditions.vocabulary.Vocabulary` declares; there is no ``eval`` and
no ``compile``. Constant sub-expressions are folded once, here.
"""

from __future__ import annotations

import ast
import difflib
import io
import operator
import re
import tokenize
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from worker.core.conditions import compiled as build
from worker.core.conditions.compiled import Condition, Node, ValueTest
from worker.core.conditions.vocabulary import (
    KIND_LABELS,
    LITERAL_NAMES,
    ConditionError,
    Evaluator,
    Kind,
    Vocabulary,
    render_value,
)

#: Longer conditions are surely a mistake, and the parser recurses on nesting.
MAX_CONDITION_LENGTH = 4000
#: Bounds the depth of the closure tree, so evaluation can never hit the recursion limit.
MAX_NESTING = 64

_COMPARISONS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_ARITHMETIC: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Mod: ("%", operator.mod),
}
_SIGNS: dict[type[ast.unaryop], tuple[str, Callable[[Any], Any]]] = {
    ast.USub: ("-", operator.neg),
    ast.UAdd: ("+", operator.pos),
}
_FORBIDDEN_OPERATORS: dict[type[ast.AST], str] = {
    ast.Pow: "'**' is not allowed",
    ast.FloorDiv: "'//' is not allowed; use /",
    ast.BitAnd: "'&' is not allowed; use 'and'",
    ast.BitOr: "'|' is not allowed; use 'or'",
    ast.BitXor: "'^' is not allowed",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.Invert: "'~' is not allowed; use 'not'",
    ast.Is: "'is' is not allowed; use == (and == null for missing values)",
    ast.IsNot: "'is not' is not allowed; use != (and != null for present values)",
}
_FORBIDDEN_SYNTAX: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (x.y) is not allowed",
    ast.Subscript: "indexing (x[...]) is not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "unpacking (*) is not allowed",
    ast.IfExp: "'... if ... else ...' is not allowed; combine conditions with and/or",
    ast.Dict: "dictionaries are not allowed",
    ast.Set: "sets are not allowed; write a list in square brackets",
    ast.List: "a list can only follow 'in' or 'not in'",
    ast.Tuple: "a list can only follow 'in' or 'not in'",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}


def compile_condition(source: str, vocabulary: Vocabulary) -> Condition:
    """Compile ``source`` into a :class:`Condition`, checking names, kinds and syntax.

    Raises
    ------
    ConditionError
        With a message meant for the person who wrote the condition, and its column.

    Examples
    --------
    >>> vocabulary = Vocabulary({"revenue_90d": "number", "industry": "string"})
    >>> compile_condition("1000 <= revenue_90d < 5000", vocabulary).evaluate({"revenue_90d": 10})
    False
    >>> for wrong in ("industry > 5", "industry.upper()"):
    ...     try:
    ...         compile_condition(wrong, vocabulary)
    ...     except ConditionError as error:
    ...         print(error)
    cannot compare industry (text) with 5 (a number) at column 1
    attribute access (x.y) is not allowed at column 1
    """
    return _Compiler(source, vocabulary).compile()


class _Compiler:
    """Compiles one condition; holds what the handlers share (source, names, labels)."""

    def __init__(self, source: str, vocabulary: Vocabulary) -> None:
        self._source = source
        self._vocabulary = vocabulary
        # Carriage returns and newlines become spaces so that a condition written over
        # several YAML lines parses as one line; positions stay the same character offsets.
        flat = source.replace("\r", " ").replace("\n", " ")
        self._text = flat.lstrip()
        self._shift = len(flat) - len(self._text)  # the parser rejects leading blanks
        self._text_bytes = self._text.encode("utf-8")  # AST offsets count UTF-8 bytes
        self._names: dict[str, None] = {}  # dict for first-seen order
        self._functions: set[str] = set()
        self._numbers: set[int | float] = set()  # as written, before folding
        self._explained: dict[str, Evaluator] = {}
        self._depth = 0
        self._handlers: dict[type[ast.AST], Callable[[Any], Node]] = {
            ast.Constant: self._constant,
            ast.Name: self._name,
            ast.BoolOp: self._bool_op,
            ast.UnaryOp: self._unary_op,
            ast.BinOp: self._bin_op,
            ast.Compare: self._compare,
            ast.Call: self._call,
        }

    def compile(self) -> Condition:
        body = self._parse()
        root = self._compile(body)
        if root.kind != "bool":
            if root.kind == "null":
                self._fail(body, "null alone is not a condition")
            self._fail(
                body,
                f"a condition must be true or false, but {self._show(root)} is "
                f"{KIND_LABELS[root.kind]}{self._comparison_hint(root)}",
            )
        return Condition(
            source=self._source,
            names=frozenset(self._names),
            _evaluator=root.evaluate,
            _explained=tuple(self._explained.items()),
            functions=frozenset(self._functions),
            numbers=frozenset(self._numbers),
        )

    # -- parsing and positions ---------------------------------------------------------

    def _parse(self) -> ast.expr:
        if not self._text.strip():
            raise ConditionError("the condition is empty", 1)
        if len(self._text) > MAX_CONDITION_LENGTH:
            raise ConditionError(
                f"the condition is too long (more than {MAX_CONDITION_LENGTH} characters)", 1
            )
        try:
            tree = ast.parse(self._text, mode="eval")
        except SyntaxError as error:
            raise self._syntax_error(error) from None
        except (ValueError, RecursionError, MemoryError):
            message = "the condition is too complex or holds invalid characters"
            raise ConditionError(message, 1) from None
        self._reject_comments()
        return tree.body

    def _syntax_error(self, error: SyntaxError) -> ConditionError:
        text = self._text
        offset = error.offset or 0  # 1-based character offset; 0 or beyond means "at the end"
        at_end = error.lineno not in (None, 1) or not 1 <= offset <= len(text)
        index = len(text.rstrip()) if at_end else offset - 1
        culprit = "" if at_end else text[index]
        message = re.sub(r"\s*\(detected at line \d+\)", "", error.msg)
        if message.startswith("unterminated string"):
            detail = "a text value is missing its closing quote"
        elif culprit == "=" and text[index - 1 : index] not in ("=", "!", "<", ">"):
            detail = "use == to compare"
        elif culprit in ("&", "|"):
            detail = "use 'and' and 'or' instead of '&&' and '||'"
        elif culprit == "!":
            detail = "use 'not' instead of '!'"
        elif at_end:
            detail = "the condition is incomplete"
        elif message.startswith("invalid syntax"):
            detail = message.removeprefix("invalid syntax").lstrip(". ")  # "Perhaps ...?"
        else:
            detail = message  # e.g. "'(' was never closed", "invalid character '…'"
        line, column = self._position(index)
        return ConditionError("syntax error" + (f": {detail}" if detail else ""), column, line)

    def _reject_comments(self) -> None:
        # After flattening, a comment would silently swallow every following line.
        try:
            for token in tokenize.generate_tokens(io.StringIO(self._text).readline):
                if token.type == tokenize.COMMENT:
                    line, column = self._position(token.start[1])
                    raise ConditionError("comments (#) are not allowed", column, line)
        except (tokenize.TokenError, SyntaxError):  # pragma: no cover - ast.parse accepted it
            pass

    def _position(self, index: int) -> tuple[int, int]:
        """(line, column), both 1-based, of character ``index`` of the parsed text."""
        index += self._shift
        line = self._source.count("\n", 0, index) + 1
        line_start = self._source.rfind("\n", 0, index) + 1
        return line, index - line_start + 1

    def _fail(self, syntax: ast.AST, message: str) -> NoReturn:
        byte_offset = getattr(syntax, "col_offset", 0)
        index = len(self._text_bytes[:byte_offset].decode("utf-8", "replace"))
        line, column = self._position(index)
        raise ConditionError(message, column, line)

    def _show(self, node: Node) -> str:
        """The source text of a compiled node, shortened for messages."""
        if node.is_constant:
            return render_value(node.value)
        text = ast.get_source_segment(self._text, node.syntax) or ast.unparse(node.syntax)
        return text if len(text) <= 40 else text[:37] + "..."

    # -- the whitelist -----------------------------------------------------------------

    def _compile(self, syntax: ast.expr) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                self._fail(syntax, f"the condition is nested too deeply (over {MAX_NESTING})")
            handler = self._handlers.get(type(syntax))
            if handler is None:
                self._fail(syntax, _FORBIDDEN_SYNTAX.get(type(syntax), "this is not allowed"))
            return handler(syntax)
        finally:
            self._depth -= 1

    def _literal(self, syntax: ast.AST, value: Any) -> Node:
        kind: Kind
        if isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int | float):
            kind = "number"
        elif isinstance(value, str):
            kind = "string"
        elif value is None:
            kind = "null"
        else:
            self._fail(syntax, f"{type(value).__name__} values are not allowed")
        return Node(build.constant(value), kind, syntax, is_constant=True, value=value)

    def _fold(self, node: Node, operands: Iterable[Node]) -> Node:
        # Constant sub-expressions such as `12 * 1000` are computed once, here.
        if all(operand.is_constant for operand in operands):
            return Node(
                build.constant(value := node.evaluate({})),
                node.kind,
                node.syntax,
                is_constant=True,
                value=value,
            )
        return node

    def _constant(self, syntax: ast.Constant) -> Node:
        value = syntax.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._numbers.add(value)
        return self._literal(syntax, value)

    def _name(self, syntax: ast.Name) -> Node:
        name = syntax.id
        if name in LITERAL_NAMES:
            return self._literal(syntax, LITERAL_NAMES[name])
        self._reject_private(syntax, name)
        kind = self._vocabulary.features.get(name)
        if kind is None:
            if name in self._vocabulary.functions:
                self._fail(syntax, f"'{name}' is a function; call it, e.g. {name}(...)")
            suggestion = closest(name, self._vocabulary.features)
            hint = f"did you mean '{suggestion}'?" if suggestion else f'text needs quotes: "{name}"'
            self._fail(syntax, f"unknown feature '{name}' ({hint})")
        evaluator = build.feature(name)
        self._names.setdefault(name)
        self._explained.setdefault(name, evaluator)
        return Node(evaluator, kind, syntax, feature=name)

    def _reject_private(self, syntax: ast.AST, name: str) -> None:
        # Names are NFKC-normalised by the parser, so this also catches look-alike
        # underscores; nothing in the language may even name a dunder.
        if name.startswith("_"):
            self._fail(syntax, f"names starting with '_' are not allowed: '{name}'")

    def _require(self, node: Node, kind: Kind, where: str) -> None:
        if node.kind != kind:
            wanted = "conditions (true/false)" if kind == "bool" else "numbers"
            hint = self._comparison_hint(node) if kind == "bool" else ""
            self._fail(
                node.syntax,
                f"{where} needs {wanted}, but {self._show(node)} is {KIND_LABELS[node.kind]}{hint}",
            )

    def _comparison_hint(self, node: Node) -> str:
        if node.kind == "number":
            return f"; compare it, e.g. {self._show(node)} > 0"
        if node.kind == "string":
            return f'; compare it, e.g. {self._show(node)} == "..."'
        return ""

    def _bool_op(self, syntax: ast.BoolOp) -> Node:
        word = "and" if isinstance(syntax.op, ast.And) else "or"
        operands = [self._compile(value) for value in syntax.values]
        for operand in operands:
            self._require(operand, "bool", f"'{word}'")
        evaluators = tuple(operand.evaluate for operand in operands)
        combine = build.all_of if word == "and" else build.any_of
        return self._fold(Node(combine(evaluators), "bool", syntax), operands)

    def _unary_op(self, syntax: ast.UnaryOp) -> Node:
        operand = self._compile(syntax.operand)
        if isinstance(syntax.op, ast.Not):
            self._require(operand, "bool", "'not'")
            return self._fold(Node(build.negation(operand.evaluate), "bool", syntax), [operand])
        sign = _SIGNS.get(type(syntax.op))
        if sign is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(syntax.op), "not allowed"))
        symbol, apply = sign
        self._require(operand, "number", f"'{symbol}'")
        node = Node(build.unary_arithmetic(apply, operand.evaluate), "number", syntax)
        return self._fold(node, [operand])

    def _bin_op(self, syntax: ast.BinOp) -> Node:
        arithmetic = _ARITHMETIC.get(type(syntax.op))
        if arithmetic is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(syntax.op), "not allowed"))
        symbol, apply = arithmetic
        left, right = self._compile(syntax.left), self._compile(syntax.right)
        for operand in (left, right):
            self._require(operand, "number", f"'{symbol}'")
        if symbol in "/%" and right.is_constant and right.value == 0:
            self._fail(syntax.right, "division by zero")
        node = Node(build.binary_arithmetic(apply, left.evaluate, right.evaluate), "number", syntax)
        return self._fold(node, [left, right])

    def _compare(self, syntax: ast.Compare) -> Node:
        """A comparison or a chain of them (``1000 <= revenue_90d < 5000``)."""
        first = left = self._compile(syntax.left)
        operands = [first]
        # Per link: a value test for the general chain, and a ready evaluator that is used
        # when there is a single link (the common case, one closure call cheaper).
        steps: list[tuple[ValueTest, Evaluator]] = []
        single: Evaluator | None = None
        for index, (op, comparator) in enumerate(zip(syntax.ops, syntax.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn):
                if index < len(syntax.ops) - 1:
                    self._fail(comparator, "a list must end the comparison")
                negate = isinstance(op, ast.NotIn)
                items = self._list_after_in(left, comparator, "not in" if negate else "in")
                # A constant node holding the set; its kind is never looked at again.
                right = Node(build.constant(items), left.kind, comparator, True, items)
                steps.append((build.member_test(negate), right.evaluate))
                single = build.membership(left, items, negate)
            else:
                right = self._compile(comparator)
                test, single = self._compare_pair(left, right, op, syntax)
                steps.append((test, right.evaluate))
            operands.append(right)
            left = right
        if len(steps) > 1 or single is None:
            single = build.chain(first.evaluate, tuple(steps))
        return self._fold(Node(single, "bool", syntax), operands)

    def _compare_pair(
        self, left: Node, right: Node, op: ast.cmpop, syntax: ast.Compare
    ) -> tuple[ValueTest, Evaluator]:
        """Check one comparison; return its value test (for chains) and its evaluator."""
        comparison = _COMPARISONS.get(type(op))
        if comparison is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(op), "not allowed"))
        symbol, compare = comparison
        if "null" in (left.kind, right.kind):
            if symbol not in ("==", "!="):
                self._fail(left.syntax, f"null can only be used with == and !=, not {symbol}")
            negate = symbol == "!="
            other = right if left.kind == "null" else left
            return build.missing_test(negate), build.missing(other, negate)
        if left.kind != right.kind:
            self._fail(
                left.syntax,
                f"cannot compare {self._show(left)} ({KIND_LABELS[left.kind]}) "
                f"with {self._show(right)} ({KIND_LABELS[right.kind]})",
            )
        if left.kind == "bool" and symbol not in ("==", "!="):
            self._fail(left.syntax, f"'{symbol}' cannot order true/false values; use == or !=")
        return build.null_safe(compare), build.comparison(compare, left, right)

    def _list_after_in(self, left: Node, syntax: ast.expr, word: str) -> frozenset[Any]:
        if not isinstance(syntax, ast.List | ast.Tuple):
            self._fail(syntax, f'\'{word}\' needs a list in square brackets, e.g. ["a", "b"]')
        if left.kind == "null":
            self._fail(left.syntax, f"null cannot be used with '{word}'; use == null")
        values = []
        for element in syntax.elts:
            item = self._compile(element)
            if not item.is_constant:
                self._fail(element, f"a list may only hold fixed values, not {self._show(item)}")
            if item.kind == "null":
                self._fail(element, "null cannot be in a list; test missing values with == null")
            if item.kind != left.kind:
                self._fail(
                    element,
                    f"{self._show(left)} is {KIND_LABELS[left.kind]} but the list holds "
                    f"{self._show(item)} ({KIND_LABELS[item.kind]})",
                )
            values.append(item.value)
        return frozenset(values)

    def _call(self, syntax: ast.Call) -> Node:
        if not isinstance(syntax.func, ast.Name):
            self._compile(syntax.func)  # reports attribute access, lambdas, ... first
            self._fail(syntax, "only the functions of the vocabulary can be called")
        name = syntax.func.id
        self._reject_private(syntax.func, name)
        if syntax.keywords:
            self._fail(
                syntax.keywords[0], "keyword arguments are not allowed; pass values in order"
            )
        function = self._vocabulary.functions.get(name)
        if function is None:
            self._fail(syntax, self._unknown_function(name))
        arguments = tuple(self._compile(argument) for argument in syntax.args)
        expected = len(function.arg_kinds)
        if len(arguments) != expected:
            plural = "argument" if expected == 1 else "arguments"
            self._fail(
                syntax, f"{name}() takes {expected} {plural}, but {len(arguments)} were given"
            )
        for position, (argument, kind) in enumerate(
            zip(arguments, function.arg_kinds, strict=True), 1
        ):
            if argument.kind != kind:
                self._fail(
                    argument.syntax,
                    f"argument {position} of {name}() must be {KIND_LABELS[kind]}, "
                    f"but {self._show(argument)} is {KIND_LABELS[argument.kind]}",
                )
        evaluator = build.call(function.impl, arguments)
        self._functions.add(name)
        label = f"{name}({', '.join(self._show(argument) for argument in arguments)})"
        self._explained.setdefault(label, evaluator)
        return Node(evaluator, function.result_kind, syntax)

    def _unknown_function(self, name: str) -> str:
        if name in self._vocabulary.features or name in LITERAL_NAMES:
            return f"'{name}' is not a function"
        suggestion = closest(name, self._vocabulary.functions)
        if suggestion:
            return f"unknown function '{name}' (did you mean '{suggestion}'?)"
        available = ", ".join(sorted(self._vocabulary.functions)) or "none"
        return f"unknown function '{name}' (available: {available})"


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None
