"""The layering, checked: SQL only in the storage package, the Discord layer and the CLI only
through PersonaService and the feature packages' exports, a core that never imports discord.py,
imports that go one way with no cycle, and packages that say what they own."""

import re
from pathlib import Path

BOT = Path(__file__).resolve().parents[1] / "bot"
STORAGE = BOT / "core" / "storage"


def sources(*folders: Path):
    for folder in folders:
        yield from (p for p in folder.rglob("*.py"))


def test_sql_lives_only_in_the_storage_package():
    database = re.compile(r"^\s*(import|from)\s+(sqlalchemy|aiosqlite|sqlite3|psycopg)\b", re.MULTILINE)
    raw_sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")
    offenders = [
        str(p.relative_to(BOT))
        for p in sources(BOT)
        if STORAGE not in p.parents and (database.search(p.read_text()) or raw_sql.search(p.read_text()))
    ]
    assert offenders == []


def test_discord_layer_and_cli_use_only_the_facade():
    # Attribute access past the facade (imports of record types such as ModelRecord are fine).
    parts = "registry|queue|store|storage|generator|scheduler|batcher"
    reach = re.compile(rf"^(?!\s*(from|import)\s).*core\.({parts})\b", re.MULTILINE)
    # Outside the core, a feature package is used through what its __init__ exports; only the worker
    # entry point builds the training worker itself.
    features = "ingest|training|generation|personas|conversation|storage"
    internals = re.compile(rf"^\s*from bot\.core\.({features})\.\w+ import", re.MULTILINE)
    outside = [p for p in sources(BOT) if BOT / "core" not in p.parents]
    assert [str(p.relative_to(BOT)) for p in outside if reach.search(p.read_text())] == []
    assert [
        str(p.relative_to(BOT)) for p in outside if p.name != "worker.py" and internals.search(p.read_text())
    ] == []


def test_the_core_is_discord_free():
    imports_discord = re.compile(r"^\s*(import|from)\s+discord\b", re.MULTILINE)
    assert [str(p) for p in sources(BOT / "core") if imports_discord.search(p.read_text())] == []


def test_no_function_in_bot_is_over_60_lines():
    import ast

    long = []
    for path in sources(BOT):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(BOT)}:{node.name} ({lines} lines)")
    assert long == []


def module_name(path: Path) -> str:
    parts = path.relative_to(BOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_load(path: Path) -> set[str]:
    """The bot modules a module imports when it is loaded: module level, `if` and `try` blocks
    included; imports inside functions and under `if TYPE_CHECKING:` run later or never."""
    import ast

    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in sources(BOT)}
    graph = {}
    for name, path in modules.items():
        targets = {t for t in imports_at_load(path) if t in modules and t != name}
        # Loading a.b.c loads its packages a and a.b first.
        targets |= {".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 1)}
        graph[name] = targets - {name} - {p for p in targets if name.startswith(p + ".")}
    return graph


def test_no_import_cycle_in_bot():
    graph = import_graph()
    cycles, state = [], {}

    def walk(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                walk(target, [*trail, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_layers_import_downward_only():
    # Discord layer -> service -> feature packages -> storage; nothing below reaches up.
    graph = import_graph()
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if (source.startswith("bot.core.") and target.startswith("bot.discord"))
        or (source.startswith("bot.core.") and source != "bot.core.service" and target == "bot.core.service")
        or (
            source.startswith("bot.core.storage")
            and target.startswith("bot.core.")
            and not target.startswith("bot.core.storage")
            and target not in ("bot.core", "bot.core.errors")
        )
    ]
    assert upward == []


def test_no_module_name_is_used_twice_outside_cogs_and_storage():
    seen: dict[str, list[str]] = {}
    for path in sources(BOT):
        if path.name == "__init__.py" or {"cogs", "storage"} & set(path.relative_to(BOT).parts[:-1]):
            continue
        seen.setdefault(path.stem, []).append(str(path.relative_to(BOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_every_package_says_what_it_owns():
    import ast

    quiet = [
        str(init.relative_to(BOT))
        for init in BOT.rglob("__init__.py")
        if init.parent != BOT and not ast.get_docstring(ast.parse(init.read_text()))
    ]
    assert quiet == []


def test_the_facade_stays_a_facade():
    # A new feature brings its own service object (as trainings, schedules and chatter do).
    assert len((BOT / "core" / "service.py").read_text().splitlines()) <= 400
