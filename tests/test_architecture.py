"""The layering, checked: SQL only in the storage package, the Discord layer and the CLI only
through PersonaService, and a core that never imports discord.py."""

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
    internals = re.compile(r"from \.+core\.(jobs|store|generation|storage\.\w+) import (?!JobOutcome\b)")
    outside = [p for p in sources(BOT) if BOT / "core" not in p.parents]
    assert [str(p.relative_to(BOT)) for p in outside if reach.search(p.read_text())] == []
    assert [str(p.relative_to(BOT)) for p in outside if internals.search(p.read_text())] == []


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
