"""The layers, read from the imports: core imports no interface, gRPC does not reach into tasks/,
and `voxmatch extract` runs without the server's libraries."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from _helpers import model_env, speech_clip

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "voxmatch"
INTERFACE_PACKAGES = ("tasks", "rest", "grpc")
INTERFACE_MODULES = ("cli", "gallery_cli", "server", "__main__")
SERVER_SIDE = ("metrics",)
"""The server's Prometheus registry: fed by the interfaces, it reads the task runner and store
when scraped, so it sits above tasks/ with the server, not in core."""
ABOVE_CORE = tuple(
    f"voxmatch.{name}" for name in (*INTERFACE_PACKAGES, *INTERFACE_MODULES, *SERVER_SIDE)
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside functions (lazy imports count)."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from voxmatch import tasks` imports a module too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def core_modules() -> dict[str, Path]:
    return {name: path for name, path in modules().items() if not is_under(name, ABOVE_CORE)}


def test_core_imports_no_interface() -> None:
    core = core_modules()
    assert {"voxmatch", "voxmatch.extraction", "voxmatch.shared_extractor"} <= set(core)
    assert not any(is_under(name, ABOVE_CORE) for name in core)
    offending = {
        name: sorted(module for module in imported_modules(path) if is_under(module, ABOVE_CORE))
        for name, path in core.items()
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_grpc_does_not_import_tasks() -> None:
    grpc_modules = {
        name: path for name, path in modules().items() if is_under(name, ("voxmatch.grpc",))
    }
    assert "voxmatch.grpc.services" in grpc_modules
    offending = {
        name: sorted(
            module for module in imported_modules(path) if is_under(module, ("voxmatch.tasks",))
        )
        for name, path in grpc_modules.items()
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_the_import_reader_sees_lazy_and_nested_imports() -> None:
    # cli.py imports the server inside `serve` only: the reader must find it there.
    found = imported_modules(PACKAGE / "cli.py")
    assert "voxmatch.server" in found
    assert "voxmatch.shared_extractor" in found


SERVER_LIBRARIES = ("fastapi", "uvicorn", "grpc", "starlette")

RUN_AND_LIST_MODULES = """
import sys
from voxmatch.cli import main
try:
    main()
except SystemExit as end:
    code = end.code
loaded = sorted({name.partition(".")[0] for name in sys.modules})
print("exit", code)
print("modules", " ".join(loaded))
"""


@pytest.mark.slow
def test_voxmatch_extract_runs_without_the_server_libraries(tmp_path: Path) -> None:
    sf.write(tmp_path / "alice.wav", speech_clip("FEE083", "trn06"), 16000)
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, "extract", "alice.wav", "--out", "vps"],
        cwd=tmp_path,
        env={**os.environ, **model_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["exit"] == "0", result.stderr
    assert (tmp_path / "vps" / "alice.vp").is_file()
    loaded = set(lines["modules"].split())
    assert "onnxruntime" in loaded, "the listing holds what the extraction used"
    assert loaded.isdisjoint(SERVER_LIBRARIES), loaded & set(SERVER_LIBRARIES)
    assert "ray" not in loaded, "Ray is imported only for --ray"
