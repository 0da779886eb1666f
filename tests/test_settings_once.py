"""Each generator setting is declared once, in its settings class: no second default for it in the code it flows through."""
import ast, dataclasses, inspect
from pathlib import Path

import pytest

import synthnb
from synthnb.generators.registry import SETTINGS

PKG = Path(synthnb.__file__).parent
# where a generator's settings travel: its own module, the registry that builds it, and stage 2
ROUTE = ['generators/registry.py', 'stages/generation.py']


def _literal(node):
    try: return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError): return _missing


_missing = object()


def second_defaults(source: str, cls_name: str, defaults: dict) -> list:
    """`(line, name, value)` for every place in `source`, outside the class `cls_name`, that gives a setting of
    `defaults` its default value again: a parameter default, a keyword argument or a dict key with the same value."""
    tree, found = ast.parse(source), []
    skip = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == cls_name for n in ast.walk(c)}
    def same(name, node):
        v = _literal(node)
        return name in defaults and v is not _missing and type(v) is type(defaults[name]) and v == defaults[name]
    for node in ast.walk(tree):
        if id(node) in skip: continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            pairs = list(zip([x.arg for x in a.args][len(a.args) - len(a.defaults):], a.defaults))
            pairs += [(x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            found += [(d.lineno, n, _literal(d)) for n, d in pairs if same(n, d)]
        elif isinstance(node, ast.Call):
            found += [(k.value.lineno, k.arg, _literal(k.value)) for k in node.keywords if same(k.arg, k.value)]
        elif isinstance(node, ast.Dict):
            found += [(v.lineno, _literal(k), _literal(v)) for k, v in zip(node.keys, node.values)
                      if k is not None and isinstance(_literal(k), str) and same(_literal(k), v)]
    return found


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING: out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING: out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize('key', sorted(SETTINGS))
def test_a_generator_default_is_declared_once(key):
    cls = SETTINGS[key]
    own = Path(inspect.getsourcefile(cls)).relative_to(PKG).as_posix()
    defaults = {k: v for k, v in _defaults(cls).items() if v not in (None, '', [], {}, True, False)}
    twice = [f'{path}:{line}: {name} = {value!r}' for path in dict.fromkeys([own, *ROUTE])
             for line, name, value in second_defaults((PKG / path).read_text(), cls.__name__, defaults)]
    assert not twice, f'{cls.__name__} defaults declared a second time (take them from the settings object): {twice}'


def test_the_check_finds_a_second_default():
    src = ("class S:\n    steps: int = 60\n"
           "def train(x, steps=60): pass\n"
           "train(1, steps=60)\n"
           "CFG = {'steps': 60, 'other': 60}\n"
           "def fine(steps=61): pass\n")
    assert [(line, name) for line, name, _ in second_defaults(src, 'S', {'steps': 60})] == [(3, 'steps'), (4, 'steps'),
                                                                                            (5, 'steps')]
