"""Shared fixtures: real history databases (a SQLite file, a fresh PostgreSQL database).
And the session's end: no process the tests started may still run (tests/leaks.py)."""

from __future__ import annotations

import fnmatch
import gc
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import leaks
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

PG_TEST_URL = os.environ.get("CAS_AUDIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite history file in the test's temporary folder (not created yet)."""
    return f"sqlite:///{tmp_path / 'history.db'}"


@pytest.fixture(scope="session")
def _sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite history upgraded to the current schema once per session (per xdist worker),
    holding no rows: `sqlite_history_url` copies it."""
    from scanner.store.db import upgrade_database

    path = tmp_path_factory.mktemp("sqlite-at-head") / "history.db"
    upgrade_database(f"sqlite:///{path}")
    # every connection closed: the WAL is checkpointed into the file and removed
    assert not path.with_name(f"{path.name}-wal").exists()
    return path


@pytest.fixture
def sqlite_history_url(tmp_path: Path, _sqlite_at_head: Path) -> str:
    """URL of a new SQLite history file at the current schema holding no rows: a copy of the
    session's `_sqlite_at_head` (migrating each would cost ~85 ms of CPU). Creating and
    upgrading empty databases is tested through `store_url` and `sqlite_url`."""
    path = tmp_path / "history.db"
    shutil.copyfile(_sqlite_at_head, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Engine]:
    """An autocommit connection to the PostgreSQL server named by CAS_AUDIT_TEST_PG."""
    url = make_url(PG_TEST_URL)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        message = (
            f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: "
            f"set CAS_AUDIT_TEST_PG to run these tests ({reason})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(_pg_admin: Engine) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"cas_audit_test_{uuid.uuid4().hex[:16]}"
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _pg_at_head(_pg_admin: Engine) -> Iterator[Engine]:
    """A PostgreSQL database upgraded to the current schema once per session (`history_url`)."""
    from scanner.store.db import upgrade_database

    name = f"cas_audit_head_{uuid.uuid4().hex[:16]}"
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_admin.url.set(database=name)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        upgrade_database(url.render_as_string(hide_password=False))
        yield engine
    finally:
        engine.dispose()
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def history_url(request: pytest.FixtureRequest) -> str:
    """A history database at the current schema holding no rows: once a new SQLite file (a copy
    of the session's, `sqlite_history_url`), once the session's PostgreSQL database emptied as
    new (every table but the schema version truncated, identities restarted). Creating and
    upgrading empty databases is tested through `store_url`."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_history_url")
        return url
    from scanner.store.db import VERSION_TABLE

    engine: Engine = request.getfixturevalue("_pg_at_head")
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename <> :kept"),
            {"kept": VERSION_TABLE},
        ).scalars().all()
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty history database URL: once a SQLite file, once a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


# The test files that took longest (the median of four full runs' per-file sums of junitxml
# times, 2026-12-06 08:20-08:40 UTC, three and four workers, load 13-90: bench/README.md),
# longest first. `make test` hands whole files to its workers in collection order
# (--dist loadfile --no-loadscope-reorder): these start first, so that no worker is still busy
# with a long file after the others have finished.
LONGEST_FIRST = ("test_seal_chain.py", "test_store.py", "test_kerberos.py", "test_prune_during_scan.py",
                 "test_prune.py", "test_prune_evidence.py", "test_scheduling.py", "test_preflight_faults.py",
                 "test_internal_errors.py", "test_libreoffice.py", "test_cli_errors.py", "test_wheel.py",
                 "test_output_modes.py", "test_run_liveness.py", "test_outputs.py", "test_platform_launch.py",
                 "test_lab_wsman.py", "test_scan_faults.py", "test_discover_ldap.py", "test_event_1008.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that take `pg_url` directly are marked `postgres` like the parametrized ones.
    The files of LONGEST_FIRST run first, in that order (the others keep theirs)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: the rest as collected


# --- no process left behind (issue 14) -------------------------------------------------------
# Under pytest-xdist (`make test` runs `-n`), the controller and each worker are sessions. Each
# worker checks what it started (its descendants, its mark, its temporary folder) once its
# fixtures ended, ends those and hands their lines to the controller (xdist's workeroutput; a
# worker's own terminal is not shown). The controller marks the environment before it starts
# the workers, so everything they start carries its mark too: after the workers have exited, it
# finds what outlived them (an orphan of a worker's child, a worker itself), and fails the run
# for both.
_LEAKS: dict[str, object] = {}
_WORKER_KEY = "cas_audit_leaked"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark this session's environment (inherited by every process a test starts) and note
    the processes that already run. Where Python writes no bytecode (PYTHONDONTWRITEBYTECODE,
    as in some containers and CI images), compile the package once: otherwise each of the
    many `cas-audit` child processes compiles every module it imports again (0.3 s of CPU
    each for a scan)."""
    if sys.dont_write_bytecode and not _is_worker(session.config):
        import compileall

        import scanner

        compileall.compile_dir(Path(scanner.__file__).parent, quiet=1)
    if sys.dont_write_bytecode and _is_worker(session.config):
        workerinput = session.config.workerinput  # type: ignore[attr-defined]
        _rewrite_test_modules(session.config, int(workerinput["workerid"].removeprefix("gw")), workerinput["workercount"])
    if leaks.available():
        _LEAKS["mark"] = uuid.uuid4().hex
        _LEAKS["before"] = leaks.identities(leaks.processes())
        _LEAKS["folders"] = set()
        _LEAKS["reported"] = []
        leaks.add_mark(os.environ, str(_LEAKS["mark"]))


def _rewrite_test_modules(config: pytest.Config, part: int, parts: int) -> None:
    """A worker of an xdist session, where Python writes no bytecode: before collecting, rewrite
    the asserts of its share of the test modules (every `parts`-th, from `part`) and keep them in
    pytest's own cache (__pycache__/*-pytest-*.pyc, which pytest reads even where it may not
    write). The workers share the work instead of each rewriting and compiling every module of
    the suite when it collects (bench/README.md, the test suite's time). pytest's own rewriting
    (private names: skipped if they move or change), so the cached code is what collecting would have
    made; a stale entry is never read (pytest checks the source's hash); a module another
    worker has not written yet is rewritten by the collection as before; written atomically."""
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )
    except ImportError:
        return
    state = config.stash.get(assertstate_key, None)
    if state is None:   # --assert=plain
        return
    patterns = [*config.getini("python_files"), "conftest.py"]
    files: set[Path] = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        candidates = path.rglob("*.py") if path.is_dir() else [path]
        files.update(f for f in candidates if any(fnmatch.fnmatch(f.name, p) for p in patterns))
    enabled = gc.isenabled()
    gc.disable()   # rewriting makes many small objects: no collection of the whole heap for them
    try:
        for fn in sorted(files)[part::parts]:
            pyc = get_cache_dir(fn) / (fn.name[:-3] + PYC_TAIL)
            if _read_pyc(fn, pyc) is not None:
                continue
            try:
                source_hash, co = _rewrite_test(fn, config)
                pyc.parent.mkdir(exist_ok=True)
            except (OSError, SyntaxError):
                continue   # the worker reports it when it collects
            _write_pyc(state, co, source_hash, pyc)
    except (TypeError, ValueError, AttributeError):
        return   # a pytest whose private functions changed their signatures: collecting rewrites as before
    finally:
        if enabled:
            gc.enable()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection(session: pytest.Session) -> Iterator[None]:
    """No garbage collection while the suite is collected: importing and rewriting ~110 test
    modules makes many objects, and each full collection it set off walked the whole heap
    (SQLAlchemy, openpyxl, hypothesis...), which grows as the modules load. After it, one
    collection, and what is left (the modules, the collected tests) is frozen: the full
    collections while the tests run no longer walk it (gc.freeze)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if enabled:
            gc.collect()
            gc.freeze()
            gc.enable()


@pytest.fixture(scope="session", autouse=True)
def _session_folders(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The session's temporary folder, which the command lines of its processes name."""
    _note_folder(tmp_path_factory.getbasetemp())


def _note_folder(base: Path) -> None:
    folders = _LEAKS.get("folders")
    if isinstance(folders, set):
        folders.update({str(base), str(base.resolve())})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """The controller: keep what a worker found left running (pytest-xdist's hook)."""
    lines = getattr(node, "workeroutput", {}).get(_WORKER_KEY, [])
    worker = getattr(getattr(node, "gateway", None), "id", "a worker")
    reported = _LEAKS.get("reported")
    if isinstance(reported, list):
        reported.extend(f"{worker}: {line}" for line in lines)


@pytest.hookimpl(trylast=True)   # after xdist's controller has ended its workers
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a process the session started still runs after every fixture ended
    (a grace of a few seconds for processes a teardown has just signalled); end those."""
    if "mark" not in _LEAKS:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and not _is_worker(session.config) and session.config.pluginmanager.has_plugin("dsession"):
        _note_folder(factory.getbasetemp())   # the workers' folders are inside the controller's
    folders = tuple(sorted(_LEAKS["folders"]))  # type: ignore[call-overload]
    found = leaks.session_processes(_LEAKS["before"], str(_LEAKS["mark"]), folders)  # type: ignore[arg-type]
    left = leaks.wait_gone(found, leaks.GRACE_S)
    leaks.kill(left)
    lines = [*_LEAKS["reported"], *(f"pid {p.pid} (parent {p.ppid}): {p.cmdline[:300]}" for p in left)]  # type: ignore[misc]
    if _is_worker(session.config):
        session.config.workeroutput[_WORKER_KEY] = lines  # type: ignore[attr-defined]
        return
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", f"{len(lines)} process(es) started by this test session still running", red=True)
        for line in lines:
            reporter.write_line(line)
        reporter.stats.setdefault("leaked", []).extend(lines)
    else:
        print("leaked processes:", *lines, sep="\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
