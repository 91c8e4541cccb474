"""A scan's worker threads read collector output at the same moment. Compiling the XML
schema from several threads at once made lxml raise XMLSchemaParseError or hang (seen
as whole scans failing or stuck); the reader must survive a first use from many threads.

The race is timing-dependent, so each attempt is a fresh process whose 16 threads all
make their first call together; with the unserialised code about one attempt in seven
failed on a 2-core machine."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.lab.fleet import load_fleet
from scanner.lab.serve import demo_fleet_path
from scanner.lab.simhost import collector_document

pytestmark = pytest.mark.slow  # many threads collecting from a running lab at once

SCRIPT = """
import sys
import threading
from pathlib import Path
from scanner.collect.reader import read_collector_output
docs = [p.read_bytes() for p in sorted(Path(sys.argv[1]).glob("*.xml"))]
errors = []
start = threading.Barrier(16)
def work(doc):
    start.wait()
    try:
        read_collector_output(doc)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work, args=(docs[i % len(docs)],)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(len(errors), errors[:1])
"""


def test_first_reads_from_many_threads_at_once_all_succeed(tmp_path: Path) -> None:
    """The demo servers' collector documents are written here once; each attempt's process
    imports only the reader (0.1 s of CPU instead of 0.3 s with the lab's modules)."""
    now = datetime.now(UTC)
    for i, server in enumerate(load_fleet(demo_fleet_path()).servers):
        (tmp_path / f"{i:02d}.xml").write_text(collector_document(server, {}, now), encoding="utf-8")
    for _attempt in range(12):
        result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("0 "), result.stdout
