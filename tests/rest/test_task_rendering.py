"""Tasks store neutral results and errors; the REST API renders them in SPE4's form."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import orjson

import voxmatch
import voxmatch.tasks
from voxmatch.rest.extraction import render_result as render_extraction
from voxmatch.rest.results import render_task
from voxmatch.tasks import INTERNAL, REJECTED, FieldError, TaskRecord, TaskState
from voxmatch.tasks.kinds import stored_error

TASK_ID = "0b7e4f0e-5d1a-4c43-8d0b-3f5a2b9c1e77"


def finished_task(
    state: TaskState, result: dict[str, object] | None, error: dict[str, object] | None
) -> TaskRecord:
    return TaskRecord(
        id=TASK_ID,
        kind="extraction",
        state=state,
        created=0.0,
        updated=0.0,
        finished=0.0,
        attempts=1,
        params={},
        result=result,
        error=error,
        request_id=None,
        correlation_id=None,
    )


def channel(number: int, speech_length: float) -> dict[str, object]:
    return {
        "channel_number": number,
        "voiceprint": "dm9pY2VwcmludA==",
        "speech_length": speech_length,
        "model": "campplus-voxceleb",
    }


def test_a_done_extraction_renders_to_the_spe4_channels() -> None:
    stored = {"channels": [channel(0, 3.14159), channel(1, 0.0)], "vectors": True}
    vectors = np.array([[0.6, 0.8], [0.0, 0.0]], dtype=np.float32)
    record = finished_task(TaskState.DONE, stored, None)
    body = render_task(record, render_extraction(stored, {"vectors": vectors}))
    assert body == (
        b'{"task":{"task_id":"' + TASK_ID.encode() + b'","state":"done"},"result":{"channels":['
        b'{"channel_number":0,"voiceprint":"dm9pY2VwcmludA==","speech_length":3.142,'
        b'"model":"campplus-voxceleb","vector_voiceprint":[0.6000000238418579,0.800000011920929]},'
        b'{"channel_number":1,"voiceprint":"dm9pY2VwcmludA==","speech_length":0.0,'
        b'"model":"campplus-voxceleb","vector_voiceprint":[]}]},"error":null}'
    )


def test_a_done_extraction_without_vectors_has_no_vector_key() -> None:
    stored = {"channels": [channel(0, 12.3456)], "vectors": False}
    rendered = render_extraction(stored, {})
    assert rendered == {
        "channels": [
            {
                "channel_number": 0,
                "voiceprint": "dm9pY2VwcmludA==",
                "speech_length": 12.346,
                "model": "campplus-voxceleb",
            }
        ]
    }


def test_a_channel_with_its_condition_renders_the_voxmatch_additions() -> None:
    measured = {**channel(0, 5.0), "condition": 1, "bandwidth": 3812.4}
    rendered = render_extraction({"channels": [measured], "vectors": False}, {})
    assert rendered == {
        "channels": [
            {
                "channel_number": 0,
                "voiceprint": "dm9pY2VwcmludA==",
                "speech_length": 5.0,
                "model": "campplus-voxceleb",
                "condition": "narrowband",
                "bandwidth_hz": 3812,
            }
        ]
    }
    # A channel stored by a version that measured nothing renders SPE4's fields alone (above).


def test_a_rejected_task_renders_to_a_validation_error_locating_the_field() -> None:
    error = stored_error(
        REJECTED,
        "The media file cannot be used: empty",
        [FieldError(("file",), "media.invalid", "empty")],
    )
    body = render_task(finished_task(TaskState.REJECTED, None, error), None)
    assert body == (
        b'{"task":{"task_id":"' + TASK_ID.encode() + b'","state":"rejected"},"result":null,'
        b'"error":{"type":"task.validation-error","message":"The media file cannot be used:'
        b' empty","detail":[{"location":["file"],"message":"empty","type":"media.invalid"}]}}'
    )


def test_a_failed_task_renders_to_an_internal_error() -> None:
    error = stored_error(INTERNAL, "processing failed: RuntimeError: boom")
    body = render_task(finished_task(TaskState.FAILED, None, error), None)
    assert body == (
        b'{"task":{"task_id":"' + TASK_ID.encode() + b'","state":"failed"},"result":null,'
        b'"error":{"type":"internal","message":"processing failed: RuntimeError: boom",'
        b'"detail":[]}}'
    )


def test_results_and_errors_stored_in_the_spe4_form_by_earlier_versions_render_as_stored() -> None:
    # A data folder written before tasks stored neutral results still holds finished tasks.
    spe4_channels = {
        "channels": [
            {**channel(0, 3.142), "vector_voiceprint": [0.6000000238418579, 0.800000011920929]}
        ]
    }
    assert render_extraction(spe4_channels, {}) == spe4_channels
    spe4_error: dict[str, object] = {
        "type": "task.validation-error",
        "message": "The media file cannot be used: empty",
        "detail": [{"location": ["file"], "message": "empty", "type": "media.invalid"}],
    }
    body = render_task(finished_task(TaskState.REJECTED, None, spe4_error), None)
    assert isinstance(body, bytes)
    assert orjson.loads(body)["error"] == spe4_error


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports; `from package import name` counts as importing
    package.name when name is a module of the package rather than a name it exports."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.add(node.module)
            if node.module == "voxmatch.tasks":
                modules.update(
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name not in voxmatch.tasks.__all__
                )
    return modules


def test_rest_imports_tasks_only_through_the_package() -> None:
    folder = Path(voxmatch.__file__).parent / "rest"
    reaching_in = {
        path.name: sorted(
            module for module in imported_modules(path) if module.startswith("voxmatch.tasks.")
        )
        for path in sorted(folder.glob("*.py"))
    }
    assert len(reaching_in) > 10
    assert {name: modules for name, modules in reaching_in.items() if modules} == {}
    assert "voxmatch.tasks" in imported_modules(folder / "tasks.py")
