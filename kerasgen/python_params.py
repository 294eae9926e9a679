"""Parameter lists as ``kerasgen.python_prefix`` follows them: the compiler's rules on a
def's or a lambda's parameters that the grammar leaves open (a parameter named twice, one
without a default after one with a default).

``st`` is a ``PythonPrefix``: these read its ``params``, ``brackets``, ``line`` and ``prev``,
and ``follow_params`` keeps ``params`` up to date after each token.
"""

from __future__ import annotations

from typing import NamedTuple

DEFS = ("def", "async def")


class Params(NamedTuple):
    """A parameter list being read (a def's, from its first ``(``; a lambda's, to its ``:``)."""

    depth: int  # the bracket depth of its parameters
    lambda_: bool
    names: frozenset = frozenset()
    expected: bool = True  # a parameter's name comes next
    defaulted: bool = False  # a parameter so far had a default
    starred: bool = False  # past a * or **: parameters without defaults are allowed
    plain: bool = False  # the parameter being read has neither default nor star

    def closes(self, text: str) -> bool:
        """Whether ``text`` (at the list's depth) ends a parameter."""
        return text == "," or text == (":" if self.lambda_ else ")")


def params_refuse(st, text: str, terminals) -> bool:
    """A parameter named twice, or one without a default after one with."""
    p = st.params[-1]
    if p.depth != len(st.brackets):
        return False
    if "NAME" in terminals and p.expected and text in p.names:
        return True
    return p.closes(text) and p.plain and p.defaulted and not p.starred


def follow_params(st, text: str, is_name: bool, kind: str) -> None:
    depth, params = len(st.brackets), st.params
    if params:
        p = params[-1]
        if depth == p.depth:
            if is_name and p.expected:
                p = p._replace(
                    names=p.names | {text}, expected=False, plain=st.prev not in ("*", "**")
                )
            elif text in ("*", "**"):
                p = p._replace(expected=True, starred=True)
            elif p.closes(text):
                p = None if text != "," else p._replace(expected=True, plain=False)
            elif text == "=":
                p = p._replace(expected=False, defaulted=True, plain=False)
            elif text in ("/", ":"):
                p = p._replace(expected=False, plain=p.plain and text == ":")
            params = params[:-1] + ((p,) if p else ())
        elif depth < p.depth:
            params = params[:-1]
    if text == "lambda":
        st.line_lambda = True
        params += (Params(depth, True),)
    elif text == "(" and st.line[0] == (2 if kind == "def" else 3) and kind in DEFS:
        params += (Params(1, False),)  # def NAME (
    st.params = params
