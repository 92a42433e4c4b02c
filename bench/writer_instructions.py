"""Instructions per record of the capture writer thread alone, under callgrind.

`capture_instructions.py` counts the writer thread of a real run, whose batch sizes
depend on timing. This builds hello-like `RunRecord`s in the main thread, then writes
them in batches of a fixed size from a thread of its own (`finish_previews` and
`SQLiteSink.write`, as `Publisher._write_batch` does), and reports
(count(24 batches) - count(4 batches)) / (20 * size) for that thread.

    .venv/bin/python bench/writer_instructions.py              # batches of 100
    .venv/bin/python bench/writer_instructions.py --size 63 --failed 0.05
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _record(i: int, failed: float) -> object:
    from capture.records import RunRecord, StepRecord

    t = 1795972772.20108 + i * 0.0013
    status = "failed" if failed and i % round(1 / failed) == 7 else "completed"
    step = StepRecord(
        step_id="say_hello", step_name="say_hello", status="completed",
        started_at=t + 1e-5, finished_at=t + 2e-5, duration=1.3369e-05 + i * 1e-10,
        input_preview='{"name":"World"}', output_preview='"Hello World!"',
    )  # fmt: skip
    return RunRecord(
        run_id=f"{i:032x}", run_name=f"hello-20261129T171932.{i:06d}Z", pipeline="hello",
        pipeline_version="e0c3008fb5230235", status=status, started_at=t,
        finished_at=t + 0.00024, duration=0.000132657 + i * 1e-9,
        parameters='{"name":"World"}', output_preview='{"greeting":"Hello World!"}', steps=(step,),
    )  # fmt: skip


def _child(batches: int, size: int, failed: float, home: str) -> None:
    sys.path.insert(0, str(ROOT))
    from capture.publisher import finish_previews
    from capture.sinks import SQLiteSink

    records = [[_record(b * size + i, failed) for i in range(size)] for b in range(batches)]
    sink = SQLiteSink(f"{home}/runs.db")
    sink.open()

    def write() -> None:
        for batch in records:
            for record in batch:
                finish_previews(record, 4096)  # type: ignore[arg-type]
            sink.write(batch)  # type: ignore[arg-type]

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    sink.close()


def _count(batches: int, size: int, failed: float) -> int:
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", str(batches), str(size), str(failed), home],
            capture_output=True, check=True, cwd=ROOT,
        )  # fmt: skip
        text = Path(f"{out}-02").read_text()  # thread 2: the writer
    return int(re.search(r"^(?:totals|summary): (\d+)", text, re.M).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100, help="records per batch")
    parser.add_argument("--failed", type=float, default=0.0, help="share of failed runs")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        batches, size, failed, home = args.child
        _child(int(batches), int(size), float(failed), home)
        return
    per_record = (_count(24, args.size, args.failed) - _count(4, args.size, args.failed)) / (20 * args.size)
    print(f"writer {per_record / 1000:.1f}k instructions per record (batches of {args.size})")


if __name__ == "__main__":
    main()
