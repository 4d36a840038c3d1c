"""The tracer's set-up as an operator meets it: the file exporter shared by several processes,
and a wrong setting that stops a process at start-up naming the variable."""

from __future__ import annotations

import json
import subprocess
import textwrap

from tests.support import PYTHON, ROOT, clean_env, development_check

WRITER = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from apps.eventbus.tracing import FileSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": sys.argv[2]}))
    provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(sys.argv[1]), max_export_batch_size=50))
    tracer = provider.get_tracer("test")
    for n in range(int(sys.argv[3])):
        with tracer.start_as_current_span(f"span {n}", attributes={"padding": "x" * 2000}):
            pass
    provider.shutdown()  # what each process does on its way out: the rest is written, the file closed
    """
)


def test_several_processes_append_whole_span_lines_to_one_file(tmp_path):
    path, per_process = tmp_path / "spans.jsonl", 400
    writers = [
        subprocess.Popen([PYTHON, "-c", WRITER, str(path), f"writer-{n}", str(per_process)], cwd=ROOT, env=clean_env())
        for n in range(3)
    ]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0]
    lines = path.read_text().splitlines()
    spans = [json.loads(line) for line in lines]  # every line one whole span: none cut, none interleaved
    assert len(spans) == 3 * per_process
    services = [span["resource"]["attributes"]["service.name"] for span in spans]
    assert {service: services.count(service) for service in set(services)} == {
        f"writer-{n}": per_process for n in range(3)
    }
    assert len({span["context"]["span_id"] for span in spans}) == len(spans)


def test_a_wrong_exporter_setting_stops_start_up_naming_the_variable(tmp_path):
    unknown = development_check(tmp_path, OTEL_TRACES_EXPORTER="jaeger")
    assert unknown.returncode != 0
    assert "OTEL_TRACES_EXPORTER must be one of none, console, otlp, file; got 'jaeger'" in unknown.stderr

    no_path = development_check(tmp_path, OTEL_TRACES_EXPORTER="file")
    assert no_path.returncode != 0
    assert "OTEL_EXPORTER_FILE_PATH is required with OTEL_TRACES_EXPORTER=file" in no_path.stderr

    nowhere = development_check(
        tmp_path, OTEL_TRACES_EXPORTER="file", OTEL_EXPORTER_FILE_PATH=str(tmp_path / "missing" / "spans.jsonl")
    )
    assert nowhere.returncode != 0 and "OTEL_EXPORTER_FILE_PATH must be an absolute path" in nowhere.stderr

    fine = development_check(tmp_path, OTEL_TRACES_EXPORTER="file", OTEL_EXPORTER_FILE_PATH=str(tmp_path / "s.jsonl"))
    assert fine.returncode == 0, fine.stderr
