"""What a table is made of, from three sides: `projection_ddl`'s definitions, the `CREATE TABLE` statements of a
SQL text (a migration's, the deployment's psql script), and a live PostgreSQL's catalog.

Each gives `TableShape`s in one canonical form (types as PostgreSQL's `format_type` spells them), so
tests/unit/test_projection_ddl.py and tests/integration/test_projection_ddl_on_postgres.py compare them with `==`.
The parser knows the DDL these files use, not all of SQL: anything it does not recognise inside a
`CREATE TABLE` is kept verbatim as an extra constraint, so it shows up as a difference rather than vanish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from billing_domain.adapters.postgres.projection_ddl import Table


@dataclass(frozen=True, slots=True)
class ColumnShape:
    name: str
    type: str  # canonical: `character(3)`, `timestamp with time zone`, ...
    nullable: bool
    extras: tuple[str, ...] = ()  # DEFAULT, CHECK, UNIQUE, REFERENCES ...: none in the contract


@dataclass(frozen=True, slots=True)
class TableShape:
    name: str  # schema-qualified
    unlogged: bool
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    constraints: tuple[str, ...] = ()  # table constraints other than the primary key


_ALIASES = {"int": "integer", "int4": "integer", "int8": "bigint", "int2": "smallint", "bool": "boolean",
            "float8": "double precision", "float4": "real", "timestamptz": "timestamp with time zone",
            "timestamp": "timestamp without time zone", "varchar": "character varying",
            "char": "character(1)", "character": "character(1)"}


def canonical_type(sql_type: str) -> str:
    """A type as `format_type` prints it: `char(3)` → `character(3)`, `timestamptz` → `timestamp with time zone`."""
    text = re.sub(r"\s+", " ", sql_type.strip().lower())
    text = re.sub(r"\s*\(\s*", "(", text)
    text = re.sub(r"\s*\)", ")", text)
    text = re.sub(r"\s*,\s*", ",", text)
    sized = re.fullmatch(r"(char|character|varchar|character varying|numeric|decimal)\((.+)\)", text)
    if sized:
        base = {"char": "character", "varchar": "character varying", "decimal": "numeric"}.get(sized[1], sized[1])
        return f"{base}({sized[2]})"
    return _ALIASES.get(text, text)


def shape_of(table: Table, name: str | None = None, *, unlogged: bool = False) -> TableShape:
    """The shape `projection_ddl` defines for `table` (named `name`, by default its own)."""
    return TableShape(name or table.qualified, unlogged,
                      tuple(ColumnShape(c.name, canonical_type(c.type), c.nullable) for c in table.columns),
                      (table.key,))


# --- SQL text -----------------------------------------------------------------------------------------
_CREATE = re.compile(r"CREATE\s+(?P<unlogged>UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w.\"]+)\s*"
                     r"\((?P<body>.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_COLUMN_KEYWORDS = ("PRIMARY", "NOT", "NULL", "DEFAULT", "CHECK", "UNIQUE", "REFERENCES", "CONSTRAINT",
                    "COLLATE", "GENERATED")


def statements(sql: str) -> list[str]:
    """The SQL statements of a file, comments and psql meta-commands (`\\set`, `\\getenv`) left out."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("\\")]
    text = re.sub(r"--[^\n]*", "", "\n".join(lines))
    return [s.strip() for s in _split(text, ";") if s.strip()]


def tables_created(sql: str) -> dict[str, TableShape]:
    """Every table the `CREATE TABLE` statements of `sql` create, by schema-qualified name."""
    shapes: dict[str, TableShape] = {}
    for statement in statements(sql):
        if not re.match(r"CREATE\s+(UNLOGGED\s+)?TABLE\b", statement, re.IGNORECASE):
            continue
        match = _CREATE.match(statement)
        if match is None:
            raise ValueError(f"a CREATE TABLE this parser cannot read: {statement[:120]!r}")
        name = match["name"].replace('"', "").lower()
        if name in shapes:
            raise ValueError(f"{name} is created twice")
        shapes[name] = _table(name, bool(match["unlogged"]), match["body"])
    return shapes


def statements_touching(sql: str, names: set[str]) -> list[str]:
    """Statements other than a `CREATE TABLE` that change one of these tables (ALTER, DROP, RENAME ...)."""
    found = []
    for statement in statements(sql):
        head = re.match(r"(ALTER|DROP|COMMENT\s+ON|CREATE\s+(UNIQUE\s+)?INDEX)\b", statement, re.IGNORECASE)
        if head and any(re.search(rf"\b{re.escape(n)}\b", statement, re.IGNORECASE) for n in names):
            found.append(statement)
    return found


def _table(name: str, unlogged: bool, body: str) -> TableShape:
    columns: list[ColumnShape] = []
    key: tuple[str, ...] = ()
    constraints: list[str] = []
    for element in (e.strip() for e in _split(body, ",")):
        words = element.split()
        upper = element.upper()
        if upper.startswith("PRIMARY KEY") or re.match(r"CONSTRAINT\s+\S+\s+PRIMARY\s+KEY", upper):
            key = tuple(c.strip().strip('"').lower() for c in element[element.index("(") + 1:-1].split(","))
        elif words[0].upper() in ("CONSTRAINT", "UNIQUE", "CHECK", "FOREIGN", "EXCLUDE"):
            constraints.append(" ".join(words))
        else:
            column, is_key = _column(element)
            columns.append(column)
            if is_key:
                key = (column.name,)
    if key:  # a primary key is NOT NULL whatever the column says
        columns = [ColumnShape(c.name, c.type, False, c.extras) if c.name in key else c for c in columns]
    return TableShape(name, unlogged, tuple(columns), key, tuple(constraints))


def _column(element: str) -> tuple[ColumnShape, bool]:
    name, rest = element.split(None, 1)
    words = rest.split()
    cut = next((i for i, w in enumerate(words) if w.upper() in _COLUMN_KEYWORDS), len(words))
    sql_type, tail = " ".join(words[:cut]), " ".join(words[cut:])
    is_key = re.search(r"\bPRIMARY\s+KEY\b", tail, re.IGNORECASE) is not None
    not_null = re.search(r"\bNOT\s+NULL\b", tail, re.IGNORECASE) is not None
    leftover = " ".join(re.sub(r"\bPRIMARY\s+KEY\b|\bNOT\s+NULL\b|\bNULL\b", " ", tail, flags=re.IGNORECASE).split())
    column = ColumnShape(name.strip('"').lower(), canonical_type(sql_type), not (is_key or not_null),
                         (leftover,) if leftover else ())
    return column, is_key


def _split(text: str, separator: str) -> list[str]:
    """`text` cut at `separator` outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


# --- a live PostgreSQL --------------------------------------------------------------------------------
def shape_in_database(conn: Connection, name: str) -> TableShape:
    """The table as the server has it: columns in order, `format_type`, NOT NULL, defaults, keys, persistence."""
    oid = conn.exec_driver_sql("SELECT %(t)s::regclass::oid", {"t": name}).scalar_one()
    columns = tuple(
        ColumnShape(row[0], row[1], not row[2], ("DEFAULT",) if row[3] else ())
        for row in conn.exec_driver_sql(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_attribute "
            "WHERE attrelid = %(oid)s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", {"oid": oid}))
    key = tuple(row[0] for row in conn.exec_driver_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %(oid)s AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)", {"oid": oid}))
    # 'p' the key, 'n' a NOT NULL (PostgreSQL 18 lists them as constraints): both are compared above.
    constraints = tuple(row[0] for row in conn.exec_driver_sql(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %(oid)s AND contype NOT IN ('p', 'n') "
        "ORDER BY conname", {"oid": oid}))
    persistence = conn.exec_driver_sql("SELECT relpersistence FROM pg_class WHERE oid = %(oid)s",
                                       {"oid": oid}).scalar_one()
    return TableShape(name, persistence == "u", columns, key, constraints)


def tables_in_schema(conn: Connection, schema: str) -> set[str]:
    return {f"{schema}.{row[0]}" for row in conn.exec_driver_sql(
        "SELECT relname FROM pg_class WHERE relnamespace = %(s)s::regnamespace AND relkind IN ('r', 'p')",
        {"s": schema})}
