"""Dependencies point one way (DESIGN §2): switch → routing → {messages, hsm, ledger};
ledger → hsm; simulators → {messages, hsm, switch's card_io}; and messages/ stays as pure as
hsm/ (its own purity test is tests/hsm/test_purity.py). Beside those directions:

- nothing outside ``switch/cli/`` imports ``switch.cli`` (the tests excepted): the daemon and
  the tools are not built on their commands;
- ``switch/`` outside ``cli/`` never imports ``simulators/``, and ``simulators/`` imports of
  ``switch/`` only ``switch.card_io`` (card connections, personalisation, issuance);
- no test module (``test_*.py``, ``conftest.py``) is imported by anything: what tests share
  lives in ``tests/support/``;
- no import cycle among the modules of the project, the benchmarks and the tests' support,
  counting every import wherever it is written (in a function, under ``TYPE_CHECKING``).

Every import is read from the source (``ast``), so an import inside a function counts as much
as one at the top. The rules are functions of the imports found under a root, and
``test_each_rule_fails_on_a_planted_back_import`` runs them on a small tree written under
``tmp_path`` to show that each one fails when it should."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("messages", "hsm", "routing", "ledger", "switch", "simulators")
PROJECT = frozenset(PACKAGES)
TREES = (*PACKAGES, "bench", "tests")  # every module the import graph holds
MAY_IMPORT = {
    "messages": {"messages"},
    "hsm": {"hsm"},
    "ledger": {"ledger", "hsm"},
    "routing": {"routing", "messages", "hsm", "ledger"},
    "simulators": {"simulators", "messages", "hsm", "switch", "ledger"},
    "switch": PROJECT,  # simulators/ only from cli/ (`medswitch sim ...`): see switch_rule
}
# Of ledger/, simulators may use only documented file formats: the catalogue (the HIS simulator
# prices from it) and the day-end bank files (the bank simulator answers payout files).
SIMULATORS_FROM_LEDGER = {
    "ledger.medical.catalogue",
    "ledger.dayend.payout_file",  # the bank simulator reads payout files, writes its answers
    "ledger.dayend.bank_files",
    "ledger.dayend.return_file",
    "ledger.dayend.bank_statement",
}
MESSAGES_STDLIB = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "re",
    "sys",
    "types",
    "typing",
    "pathlib",
    "iso8583",
    # the offline check of the centre's signatures on a card (messages.card_signatures):
    # RSA verification, as pure as hsm/'s use of it
    "cryptography",
}
# bench/bench_pipeline.py profiles `medswitch serve`'s App and opens its HSM through
# switch.cli.serve._soft_hsm; it goes once the daemon's HSM opener lives outside cli/.
CLI_FROM_OUTSIDE = frozenset({("bench.bench_pipeline", "switch.cli.serve")})
# Cycles other branches remove: the writer's (the `writer` branch: ledger/writer/) and the cards
# commands' package importing itself through its submodules (the `cli` branch). The lead empties
# this set at merge; any other cycle fails now, and so does an entry no longer found.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import statement's module: ``importer`` (dotted) imports ``name`` (absolute, as
    written; ``from a import b`` names ``a.b`` when that is a module, else ``a``), which is
    ``target`` in the tree (its longest known prefix), or None outside it."""

    importer: str
    name: str
    target: str | None
    line: int

    @property
    def top(self) -> str:
        return self.name.split(".")[0]

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.name}"


def module_files(root: Path, trees: Iterable[str] = TREES) -> dict[str, Path]:
    """Every module under ``trees`` by its dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for tree in trees:
        for path in sorted((root / tree).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.Import | ast.ImportFrom, module: str, path: Path) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        yield f"{base}.{alias.name}"


def imports_under(root: Path, trees: Iterable[str] = TREES) -> list[Import]:
    """Every import written in a module under ``trees``, wherever it is written."""
    modules = module_files(root, trees)
    found: dict[Import, None] = {}  # in order, each once (`from a import b, c` is one import)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node, module, path):
                if isinstance(node, ast.ImportFrom) and name not in modules:
                    name = name.rpartition(".")[0]  # `from a import b`: b is a name in a
                found[Import(module, name, _known(name, modules), node.lineno)] = None
    return list(found)


def _within(name: str | None, package: str) -> bool:
    return name is not None and (name == package or name.startswith(package + "."))


def _in(imports: list[Import], tree: str) -> Iterator[Import]:
    return (i for i in imports if _within(i.importer, tree))


def direction_rule(imports: list[Import]) -> list[str]:
    """Each project package imports only the packages MAY_IMPORT lists, and simulators/ only
    the documented file formats of ledger/."""
    wrong = []
    for package in PACKAGES:
        for found in _in(imports, package):
            if found.top in PROJECT and found.top not in MAY_IMPORT[package]:
                wrong.append(str(found))
            from_ledger = package == "simulators" and found.top == "ledger"
            if from_ledger and found.name not in SIMULATORS_FROM_LEDGER:
                wrong.append(str(found))
    return wrong


def cli_rule(imports: list[Import]) -> list[str]:
    """Nothing outside switch/cli/ imports switch.cli, the tests excepted."""
    return [
        str(i)
        for i in imports
        if _within(i.target or i.name, "switch.cli")
        and not _within(i.importer, "switch.cli")
        and not _within(i.importer, "tests")
        and (i.importer, i.target) not in CLI_FROM_OUTSIDE
    ]


def switch_rule(imports: list[Import]) -> list[str]:
    """switch/ outside cli/ never imports simulators/."""
    return [
        str(i)
        for i in _in(imports, "switch")
        if i.top == "simulators" and not _within(i.importer, "switch.cli")
    ]


def simulators_rule(imports: list[Import]) -> list[str]:
    """simulators/ imports of switch/ only switch.card_io."""
    return [
        str(i)
        for i in _in(imports, "simulators")
        if i.top == "switch" and not _within(i.target or i.name, "switch.card_io")
    ]


def _test_module(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last.startswith("test_") or last == "conftest"


def support_rule(imports: list[Import]) -> list[str]:
    """No test module is imported by anything, and what tests share lives in tests.support —
    except the contract suite's own helpers, which only tests/contract/ uses (it must import
    nothing of the project, tests.support included)."""
    return [
        str(i)
        for i in imports
        if (i.target is not None and _test_module(i.target))
        or (
            i.top == "tests"
            and i.name != "tests"
            and not _within(i.name, "tests.support")
            and not (_within(i.name, "tests.contract") and _within(i.importer, "tests.contract"))
        )
    ]


def strongly_connected(edges: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The graph's strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(edges.get(start, ()))))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(frozenset(component))
    return components


def cycles(imports: list[Import]) -> list[frozenset[str]]:
    """The import cycles among the modules found, each as its strongly connected component."""
    edges: dict[str, set[str]] = {}
    for found in imports:
        if found.target is not None and found.target != found.importer:
            edges.setdefault(found.importer, set()).add(found.target)
    return strongly_connected(edges)


def cycle_rule(imports: list[Import], known: frozenset[frozenset[str]] = frozenset()) -> list[str]:
    return [", ".join(sorted(c)) for c in cycles(imports) if c not in known]


RULES: dict[str, Callable[[list[Import]], list[str]]] = {
    "direction": direction_rule,
    "cli": cli_rule,
    "switch": switch_rule,
    "simulators": simulators_rule,
    "tests": support_rule,
    "cycles": cycle_rule,
}


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return imports_under(ROOT)


@pytest.mark.parametrize("rule", sorted(set(RULES) - {"cycles"}))
def test_imports_follow_the_rule(rule: str, project_imports: list[Import]) -> None:
    assert RULES[rule](project_imports) == [], RULES[rule].__doc__


def test_no_import_cycle_but_the_known(project_imports: list[Import]) -> None:
    assert cycle_rule(project_imports, KNOWN_CYCLES) == []


def test_every_known_cycle_is_still_there(project_imports: list[Import]) -> None:
    """A cycle gone leaves its entry behind: remove it, so that it cannot hide a new one."""
    assert set(cycles(project_imports)) >= KNOWN_CYCLES


def test_the_graph_holds_the_project() -> None:
    found = module_files(ROOT)
    assert {"switch.cli", "switch.card_io.connection", "tests.support.daemon"} <= set(found)
    assert len(found) > 300


def test_messages_is_pure(project_imports: list[Import]) -> None:
    for found in _in(project_imports, "messages"):
        assert found.top in MESSAGES_STDLIB or found.top == "messages", str(found)


# A small tree that follows every rule, and for each rule one import planted that breaks it.
CLEAN_TREE = {
    "messages/__init__.py": "",
    "messages/codec.py": "import re\nfrom messages.compiled import Decoder\n",
    "messages/compiled.py": "",
    "hsm/__init__.py": "",
    "ledger/__init__.py": "",
    "ledger/core.py": "from hsm import des\n",
    "routing/__init__.py": "",
    "switch/__init__.py": "",
    "switch/app.py": "from routing import table\nfrom ledger.core import x\n",
    "switch/card_io/__init__.py": "",
    "switch/card_io/connection.py": "from . import issuance\n",
    "switch/card_io/issuance.py": "",
    "switch/cli/__init__.py": "from simulators import pos\nfrom ..app import App\n",
    "simulators/__init__.py": "",
    "simulators/pos.py": "from switch.card_io import connection\nfrom messages import codec\n",
    "bench/__init__.py": "",
    "bench/run.py": "from switch.app import App\nfrom tests.support.daemon import run\n",
    "tests/__init__.py": "",
    "tests/support/__init__.py": "",
    "tests/support/daemon.py": "from switch.app import App\n",
    "tests/switch/__init__.py": "",
    "tests/switch/conftest.py": "from tests.support.daemon import run\n",
    "tests/switch/test_app.py": "from switch.cli import main\nfrom tests.support import daemon\n",
}
PLANTED = {  # rule → (file, what is added to it)
    "direction": ("ledger/core.py", "def late():\n    from routing import table\n"),
    "cli": ("bench/run.py", "def main():\n    from switch.cli import main\n"),
    "switch": ("switch/app.py", "def simulate():\n    import simulators.pos\n"),
    "simulators": ("simulators/pos.py", "def app():\n    from switch.app import App\n"),
    "tests": ("tests/switch/test_other.py", "from tests.switch.test_app import helper\n"),
    "cycles": ("messages/compiled.py", "def late():\n    from messages import codec\n"),
}


def _write_tree(root: Path, planted: tuple[str, str] | None = None) -> Path:
    for name, text in CLEAN_TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if planted is not None:
        name, text = planted
        path = root / name
        path.write_text((path.read_text() if path.exists() else "") + text)
    return root


def test_a_clean_tree_passes_every_rule(tmp_path: Path) -> None:
    imports = imports_under(_write_tree(tmp_path))
    assert len(imports) == 16
    assert {name: rule(imports) for name, rule in RULES.items()} == {name: [] for name in RULES}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_fails_on_a_planted_back_import(rule: str, tmp_path: Path) -> None:
    imports = imports_under(_write_tree(tmp_path, PLANTED[rule]))
    broken = {name for name, check in RULES.items() if check(imports)}
    assert broken == {rule}


def test_a_helper_outside_support_is_refused(tmp_path: Path) -> None:
    planted = ("tests/switch/test_other.py", "from tests.switch import helpers\n")
    root = _write_tree(tmp_path, planted)
    (root / "tests/switch/helpers.py").write_text("")
    assert support_rule(imports_under(root)) == [
        "tests.switch.test_other:1 imports tests.switch.helpers"
    ]


def test_a_known_cycle_is_allowed_and_only_that_one(tmp_path: Path) -> None:
    imports = imports_under(_write_tree(tmp_path, PLANTED["cycles"]))
    cycle = frozenset({"messages.codec", "messages.compiled"})
    assert cycles(imports) == [cycle]
    assert cycle_rule(imports, frozenset({cycle})) == []
    assert cycle_rule(imports, frozenset({frozenset({"messages.codec", "hsm"})})) != []
