"""Parser for the peer's fixed script grammar (documented in e2e/peer/README.md).

Scannerless recursive descent, because PowerShell tokenizes differently in expression mode (`'x' * 3` is a
multiplication) and argument mode (`Write-Output 'x' * 3` passes three arguments: 'x', '*', 3); the parser
knows which mode it is in, a separate lexer would not.

Robustness rules: the only exception that leaves parse() is ParseError. Valid PowerShell outside the grammar
is refused with a ParseError that says so (id PeerNotSupported) rather than run with some other meaning.
"""

from __future__ import annotations

import typing

from psrp_peer.script import nodes
from psrp_peer.script.errors import ParseError

MAX_NESTING = 64  # @(@(@(...))) and nested blocks; deeper input is refused, never a RecursionError
MAX_INT64 = 2**63 - 1

# PowerShell keywords that start statements the grammar does not have: refused by name instead of being
# reported as unknown commands.
UNSUPPORTED_KEYWORDS = {
    "begin", "break", "catch", "class", "configuration", "continue", "data", "do", "dynamicparam", "else",
    "elseif", "end", "enum", "exit", "filter", "finally", "for", "foreach", "function", "if", "process",
    "return", "switch", "trap", "try", "until", "using", "while", "workflow",
}  # fmt: skip

STATEMENT_END = "\n;"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
COMMAND_NAME_CHARS = NAME_CHARS | frozenset("-.")
# Characters that end a bare-word argument (argument mode).
BAREWORD_STOP = frozenset(" \t\r\n;|{}()'\"$@,`#")


def parse(source: str) -> nodes.Script:
    """Parse a script; raises ParseError (and nothing else) on bad input."""
    parser = _Parser(source)
    try:
        return parser.script()
    except ParseError:
        raise
    except RecursionError:
        raise ParseError(source, parser.i, "PeerNestingTooDeep", "The script is nested too deeply.")
    except Exception as e:  # a parser bug must fail this pipeline, never the peer
        raise ParseError(source, parser.i, "PeerParserFailure", f"The peer's parser failed: {e!r}")


class _Parser:
    def __init__(self, source: str) -> None:
        # PowerShell treats CRLF like LF.
        self.s = source.replace("\r\n", "\n")
        self.i = 0
        self.depth = 0

    # ---- helpers --------------------------------------------------------------------------------------

    def error(self, error_id: str, message: str, at: typing.Optional[int] = None) -> ParseError:
        return ParseError(self.s, self.i if at is None else at, error_id, message)

    def unsupported(self, what: str, at: typing.Optional[int] = None) -> ParseError:
        return self.error(
            "PeerNotSupported",
            f"The PSRP test peer does not support {what}; see e2e/peer/README.md for its grammar.",
            at,
        )

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    def skip_space(self) -> None:
        """Spaces, tabs, `# comments` and backtick line continuations; not newlines."""
        while not self.at_end():
            c = self.s[self.i]
            if c in " \t\r\f\v\u00a0":
                self.i += 1
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end == -1 else end
            elif c == "`" and self.peek(1) == "\n":
                self.i += 2
            elif c == "<" and self.peek(1) == "#":
                raise self.unsupported("block comments (<# #>)")
            else:
                return

    def skip_space_and_newlines(self) -> None:
        while True:
            self.skip_space()
            if self.peek() == "\n":
                self.i += 1
            else:
                return

    def word_at(self, j: int) -> str:
        k = j
        while k < len(self.s) and self.s[k] in COMMAND_NAME_CHARS:
            k += 1
        return self.s[j:k]

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error("PeerNestingTooDeep", "The script is nested too deeply.")

    # ---- script and statements ------------------------------------------------------------------------

    def script(self) -> nodes.Script:
        parameters = self.param_block()
        statements = self.statements(closing=None)
        return nodes.Script(0, parameters, statements)

    def param_block(self) -> typing.Tuple[str, ...]:
        while True:
            self.skip_space_and_newlines()
            if self.peek() == ";":
                self.i += 1
            else:
                break
        start = self.i
        if self.word_at(start).lower() != "param":
            return ()
        self.i += 5
        self.skip_space_and_newlines()
        if self.peek() != "(":
            self.i = start  # `param` not followed by '(' is just a command name
            return ()
        self.i += 1
        names: typing.List[str] = []
        while True:
            self.skip_space_and_newlines()
            c = self.peek()
            if c == ")":
                self.i += 1
                break
            if names:
                if c != ",":
                    if c == "=":
                        raise self.unsupported("parameter default values")
                    raise self.error("MissingEndParenthesisInFunctionParameterList",
                                     "Missing ')' in function parameter list.")
                self.i += 1
                self.skip_space_and_newlines()
                c = self.peek()
            if c == "[":
                raise self.unsupported("typed or attributed parameters ([int]$x)")
            if c != "$":
                raise self.error("MissingEndParenthesisInFunctionParameterList",
                                 "Missing ')' in function parameter list.")
            var = self.variable()
            if var.name == "_" or var.name.lower() in ("true", "false", "null"):
                raise self.error("ReservedParameterName", f"The parameter name '{var.name}' is not allowed.",
                                 var.pos)
            if var.name.lower() in (n.lower() for n in names):
                raise self.error("DuplicateFormalParameter",
                                 f"Duplicate parameter ${var.name} in parameter list.", var.pos)
            names.append(var.name)
        return tuple(names)

    def statements(self, closing: typing.Optional[str]) -> typing.Tuple[nodes.Statement, ...]:
        """Statements up to end of input, or up to (not past) the `closing` character."""
        result: typing.List[nodes.Statement] = []
        while True:
            self.skip_space()
            c = self.peek()
            if c in ("\n", ";") and c:
                self.i += 1
                continue
            if self.at_end():
                if closing is not None:
                    raise self.error("MissingEndCurlyBrace",
                                     "Missing closing '}' in statement block or type definition.")
                return tuple(result)
            if closing is not None and c == closing:
                return tuple(result)
            if c == "}":
                raise self.unexpected_token()
            result.append(self.statement())
            self.skip_space()
            c = self.peek()
            if not (self.at_end() or c in STATEMENT_END or (closing is not None and c == closing)):
                raise self.unexpected_token()

    def unexpected_token(self) -> ParseError:
        c = self.peek()
        if c == "}":
            return self.error("UnexpectedToken", "Unexpected token '}' in expression or statement.")
        if c == ",":
            return self.unsupported("the comma array operator (use @(a, b))")
        if c in "+-/%" or self.s.startswith(("-eq", "-ne", "-and", "-or"), self.i):
            return self.unsupported("operators other than '*' and '..'")
        token = self.word_at(self.i) or c
        return self.error("UnexpectedToken", f"Unexpected token '{token}' in expression or statement.")

    def statement(self) -> nodes.Statement:
        start = self.i
        c = self.peek()
        if c == "$":
            var = self.variable()
            self.skip_space()
            if self.peek() == "=" and self.peek(1) != "=":
                self.i += 1
                self.skip_space()
                if self.at_end() or self.peek() in STATEMENT_END:
                    raise self.error("ExpectedValueExpression",
                                     "You must provide a value expression following the '=' operator.")
                if self.peek().isalpha():
                    raise self.unsupported("assigning command output ($x = Some-Command)")
                value = self.expression()
                self.skip_space()
                if self.peek() == "|":
                    raise self.unsupported("assigning pipeline output ($x = a | b)")
                return nodes.Assignment(start, var.name, value)
            if self.peek() in ("+", "-") and self.peek(1) == "=":
                raise self.unsupported("compound assignment (+=, -=)")
            self.i = start
        word = self.word_at(start)
        if word.lower() == "throw" and (start + 5 >= len(self.s) or self.s[start + 5] not in COMMAND_NAME_CHARS):
            self.i += 5
            self.skip_space()
            if self.at_end() or self.peek() in STATEMENT_END or self.peek() == "}":
                return nodes.Throw(start, None)
            return nodes.Throw(start, self.expression())
        if word.lower() in UNSUPPORTED_KEYWORDS:
            raise self.unsupported(f"the '{word.lower()}' statement", start)
        return self.pipeline()

    def pipeline(self) -> nodes.Pipeline:
        start = self.i
        elements: typing.List[typing.Union[nodes.Command, nodes.Expression]] = [self.pipeline_element(True)]
        while True:
            self.skip_space()
            if self.peek() != "|":
                return nodes.Pipeline(start, tuple(elements))
            if self.peek(1) == "|":
                raise self.unsupported("the '||' pipeline chain operator")
            self.i += 1
            self.skip_space_and_newlines()
            elements.append(self.pipeline_element(False))

    def pipeline_element(self, first: bool) -> typing.Union[nodes.Command, nodes.Expression]:
        self.skip_space()
        c = self.peek()
        if self.at_end() or c in STATEMENT_END or c in "|}":
            raise self.error("EmptyPipeElement", "An empty pipe element is not allowed.")
        if c.isalpha() or c == "_":
            return self.command()
        if c in "&.":
            raise self.unsupported("the call operators '&' and '.'")
        if not first:
            raise self.error("ExpressionsMustBeFirstInPipeline",
                             "Expressions are only allowed as the first element of a pipeline.")
        return self.expression()

    # ---- commands (argument mode) ---------------------------------------------------------------------

    def command(self) -> nodes.Command:
        start = self.i
        name = self.word_at(start)
        self.i += len(name)
        if self.peek() not in ("", " ", "\t", "\n", ";", "|", "}", "\r", "#", "`"):
            raise self.unsupported(f"the command name syntax at '{name}{self.peek()}'")
        arguments: typing.List[typing.Union[nodes.ParameterToken, nodes.Argument]] = []
        while True:
            self.skip_space()
            c = self.peek()
            if self.at_end() or c in STATEMENT_END or c in "|}":
                return nodes.Command(start, name, tuple(arguments))
            arg_start = self.i
            if c == "-" and (self.peek(1).isalpha() or self.peek(1) == "_"):
                self.i += 1
                param = self.word_at(self.i)
                param = param.rstrip("-.") if param else param
                self.i += len(param)
                if self.peek() == ":":
                    self.i += 1
                    value = self.argument_value()
                    arguments.append(nodes.ParameterToken(arg_start, param, value, True))
                else:
                    arguments.append(nodes.ParameterToken(arg_start, param))
            else:
                arguments.append(nodes.Argument(arg_start, self.argument_value()))
            c = self.peek()
            if not (self.at_end() or c in " \t\r\n;|}#`"):
                if c == ",":
                    raise self.unsupported("the comma array operator (use @(a, b))")
                raise self.unsupported(f"an argument written as '{self.s[arg_start:self.i + 1]}'")

    def argument_value(self) -> typing.Union[nodes.Expression, nodes.ScriptBlock]:
        c = self.peek()
        start = self.i
        if c == "{":
            return self.script_block()
        if c.isdigit() or (c == "-" and self.peek(1).isdigit()):
            end = self.i + 1
            while end < len(self.s) and self.s[end] not in BAREWORD_STOP:
                end += 1
            token = self.s[self.i:end]
            if token.lstrip("-").isdigit():
                return self.number()
            if ".." in token:
                raise self.unsupported("ranges as command arguments")
            # PowerShell reads 5kb, 1.5 or 0x10 as numbers; the grammar has integers only.
            if token[:2].lower() in ("0x", "-0") or any(ch in token for ch in ".+") or token[-2:].lower() in (
                "kb", "mb", "gb", "tb", "pb"
            ):
                raise self.unsupported(f"the number '{token}' (integers only)")
            self.i = end  # e.g. 2nd: a bare word
            return nodes.Literal(start, token)
        if c in "'\"$@":
            return self.primary()
        if c in "([":
            raise self.unsupported("parenthesized expressions and type literals as arguments")
        if c == ",":
            raise self.unsupported("the comma array operator (use @(a, b))")
        if c == "`":
            raise self.unsupported("escaped characters in bare words")
        # A bare word: a string in argument mode (`Write-Output hello`).
        end = self.i
        while end < len(self.s) and self.s[end] not in BAREWORD_STOP:
            end += 1
        if end == self.i:
            raise self.error("UnexpectedToken", f"Unexpected token '{c}' in expression or statement.")
        self.i = end
        return nodes.Literal(start, self.s[start:end])

    def script_block(self) -> nodes.ScriptBlock:
        start = self.i
        self.i += 1  # {
        self.nest()
        statements = self.statements(closing="}")
        self.i += 1  # }
        self.depth -= 1
        return nodes.ScriptBlock(start, statements)

    # ---- expressions (expression mode) ----------------------------------------------------------------

    def expression(self) -> nodes.Expression:
        start = self.i
        left = self.primary()
        self.skip_space()
        if self.s.startswith("..", self.i):
            self.i += 2
            self.skip_space()
            if self.at_end() or self.peek() in STATEMENT_END:
                raise self.error("ExpectedValueExpression",
                                 "You must provide a value expression following the '..' operator.")
            return nodes.Range(start, left, self.primary())
        if self.peek() == "*" and self.peek(1) != "=":
            self.i += 1
            self.skip_space_and_newlines()
            if self.at_end() or self.peek() in ";|}":
                raise self.error("ExpectedValueExpression",
                                 "You must provide a value expression following the '*' operator.")
            right = self.primary()
            self.skip_space()
            if self.peek() in ("*", "+", "-", "/", "%") or self.s.startswith("..", self.i):
                raise self.unsupported("chained operators")
            return nodes.Multiply(start, left, right)
        return left

    def primary(self) -> nodes.Expression:
        c = self.peek()
        start = self.i
        if c.isdigit() or (c == "-" and self.peek(1).isdigit()):
            return self.number()
        if c == "'":
            return nodes.Literal(start, self.single_quoted())
        if c == '"':
            return self.double_quoted()
        if c == "$":
            var = self.variable()
            lowered = var.name.lower()
            if lowered in ("true", "false"):
                return nodes.Literal(start, lowered == "true")
            if lowered == "null":
                return nodes.Literal(start, None)
            return var
        if c == "@":
            nxt = self.peek(1)
            if nxt == "(":
                return self.array_literal()
            if nxt == "{":
                return self.hash_literal()
            if nxt in ("'", '"'):
                raise self.unsupported("here-strings (@' '@)")
            raise self.unsupported("splatting (@name)")
        if c in "([":
            raise self.unsupported("parenthesized expressions, subexpressions and type literals")
        if c == "{":
            raise self.unsupported("script blocks outside ForEach-Object")
        if c == "":
            raise self.error("ExpectedValueExpression", "You must provide a value expression.")
        if c.isalpha():
            raise self.unsupported(f"a command ('{self.word_at(start)}') where a value is expected")
        raise self.error("UnexpectedToken", f"Unexpected token '{c}' in expression or statement.")

    def number(self) -> nodes.Literal:
        start = self.i
        if self.peek() == "-":
            self.i += 1
        while self.peek().isdigit():
            self.i += 1
        c = self.peek()
        if c == "." and self.peek(1) != ".":
            raise self.unsupported("decimal numbers (integers only)", start)
        if c and (c in NAME_CHARS):
            raise self.unsupported(f"the number '{self.s[start:self.i]}{c}...' (integers only)", start)
        value = int(self.s[start:self.i])
        if abs(value) > MAX_INT64:
            raise self.unsupported("integers beyond Int64", start)
        return nodes.Literal(start, value)

    def single_quoted(self) -> str:
        start = self.i
        self.i += 1
        chunks: typing.List[str] = []
        while True:
            end = self.s.find("'", self.i)
            if end == -1:
                raise self.error("TerminatorExpectedAtEndOfString",
                                 "The string is missing the terminator: '.", start)
            chunks.append(self.s[self.i:end])
            self.i = end + 1
            if self.peek() == "'":  # '' is an escaped quote
                chunks.append("'")
                self.i += 1
            else:
                return "".join(chunks)

    ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
               "v": "\v"}

    def double_quoted(self) -> nodes.ExpandableString:
        start = self.i
        self.i += 1
        parts: typing.List[typing.Union[str, nodes.Variable]] = []
        text: typing.List[str] = []
        while True:
            if self.at_end():
                raise self.error("TerminatorExpectedAtEndOfString",
                                 'The string is missing the terminator: ".', start)
            c = self.s[self.i]
            if c == '"':
                if self.peek(1) == '"':  # "" is an escaped quote
                    text.append('"')
                    self.i += 2
                    continue
                self.i += 1
                break
            if c == "`":
                if self.i + 1 >= len(self.s):
                    raise self.error("TerminatorExpectedAtEndOfString",
                                     'The string is missing the terminator: ".', start)
                nxt = self.s[self.i + 1]
                if nxt == "u":
                    raise self.unsupported("`u{...} escapes")
                text.append(self.ESCAPES.get(nxt, nxt))
                self.i += 2
                continue
            if c == "$":
                nxt = self.peek(1)
                if nxt == "(":
                    raise self.unsupported('subexpressions in strings ("$(...)")')
                if nxt == "{":
                    raise self.unsupported('braced variable names ("${name}")')
                if nxt in NAME_CHARS:
                    if text:
                        parts.append("".join(text))
                        text = []
                    parts.append(self.variable(in_string=True))
                    continue
            text.append(c)
            self.i += 1
        if text or not parts:
            parts.append("".join(text))
        return nodes.ExpandableString(start, tuple(parts))

    def variable(self, in_string: bool = False) -> nodes.Variable:
        """`$name`. In a string, what follows the name is plain text ("$a.b" expands $a, then ".b"), as
        PowerShell's expansion does; in code, member access and indexing are refused."""
        start = self.i
        self.i += 1  # $
        c = self.peek()
        if c == "{":
            raise self.unsupported("braced variable names (${name})")
        if c in ("?", "^"):
            raise self.unsupported(f"the automatic variable ${c}")
        name_end = self.i
        while name_end < len(self.s) and self.s[name_end] in NAME_CHARS:
            name_end += 1
        if name_end == self.i:
            raise self.error(
                "InvalidVariableReference",
                "Variable reference is not valid. '$' was not followed by a valid variable name character. "
                "Consider using ${} to delimit the name.",
                start,
            )
        name = self.s[self.i:name_end]
        self.i = name_end
        if self.peek() == ":" and (self.peek(1) in NAME_CHARS):
            raise self.unsupported(f"scope or drive qualified variables (${name}:...)", start)
        if not in_string:
            if self.peek() == "." and self.peek(1) != ".":
                raise self.unsupported("member access ($x.Name)", start)
            if self.peek() == "[":
                raise self.unsupported("indexing ($x[0])", start)
        return nodes.Variable(start, name)

    def array_literal(self) -> nodes.ArrayLiteral:
        start = self.i
        self.i += 2  # @(
        self.nest()
        items: typing.List[nodes.Expression] = []
        self.skip_space_and_newlines()
        if self.peek() == ")":
            self.i += 1
            self.depth -= 1
            return nodes.ArrayLiteral(start, ())
        while True:
            self.skip_space_and_newlines()
            if self.at_end():
                raise self.error("MissingEndParenthesisInSubexpression", "Missing closing ')' in subexpression.",
                                 start)
            items.append(self.expression())
            self.skip_space_and_newlines()
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == ")":
                self.i += 1
                self.depth -= 1
                return nodes.ArrayLiteral(start, tuple(items))
            if self.at_end():
                raise self.error("MissingEndParenthesisInSubexpression", "Missing closing ')' in subexpression.",
                                 start)
            if c == ";" or c.isalpha():
                raise self.unsupported("statements inside @( ) (only comma-separated values)")
            raise self.error("UnexpectedToken", f"Unexpected token '{c}' in expression or statement.")

    def hash_literal(self) -> nodes.HashLiteral:
        start = self.i
        self.i += 2  # @{
        self.nest()
        entries: typing.List[typing.Tuple[typing.Any, nodes.Expression]] = []
        seen: typing.Set[str] = set()
        while True:
            self.skip_space()
            c = self.peek()
            if c in ("\n", ";") and c:
                self.i += 1
                continue
            if self.at_end():
                raise self.error("MissingEndCurlyBrace", "Missing closing '}' in hash literal.", start)
            if c == "}":
                self.i += 1
                self.depth -= 1
                return nodes.HashLiteral(start, tuple(entries))
            key_pos = self.i
            key = self.hash_key()
            folded = str(key).lower()
            if folded in seen:
                raise self.error("DuplicateKeyInHashLiteral",
                                 f"Duplicate keys '{key}' are not allowed in hash literals.", key_pos)
            seen.add(folded)
            self.skip_space()
            if self.peek() != "=":
                raise self.error("MissingEqualsInHashLiteral", "Missing '=' operator after key in hash literal.")
            self.i += 1
            self.skip_space_and_newlines()
            if self.at_end() or self.peek() in ";}":
                raise self.error("MissingExpressionInHashLiteral",
                                 "Missing statement after '=' in hash literal.")
            entries.append((key, self.expression()))
            self.skip_space()
            c = self.peek()
            if not (self.at_end() or c in "\n;}"):
                raise self.error("MissingEndCurlyBrace", "Missing closing '}' in hash literal.", start)

    def hash_key(self) -> typing.Any:
        c = self.peek()
        if c == "'":
            return self.single_quoted()
        if c == '"':
            expandable = self.double_quoted()
            if any(isinstance(p, nodes.Variable) for p in expandable.parts):
                raise self.unsupported("computed hashtable keys")
            return "".join(typing.cast(str, p) for p in expandable.parts)
        if c.isdigit() or (c == "-" and self.peek(1).isdigit()):
            return self.number().value
        if c.isalpha() or c == "_":
            end = self.i
            while end < len(self.s) and self.s[end] in COMMAND_NAME_CHARS:
                end += 1
            key = self.s[self.i:end]
            self.i = end
            return key
        raise self.error("MissingEqualsInHashLiteral", "Missing '=' operator after key in hash literal.")
