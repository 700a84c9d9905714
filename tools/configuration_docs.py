"""Write docs/configuration.md from the settings themselves (a test keeps the two in step).

.venv/bin/python tools/configuration_docs.py > docs/configuration.md
"""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from voxmatch.config import Settings

HEADER = """# Configuration

Every setting has an embedded default, so `voxmatch serve` needs no configuration. Each can be
set, from lowest to highest priority, in a TOML file (`--config FILE` or `VOXMATCH_CONFIG`),
by an environment variable `VOXMATCH_<NAME>` (upper case), or on the command line:
`voxmatch serve --set NAME=VALUE` for any of them, and `--host`, `--port`, `--grpc-port`,
`--data-dir` for the most used.

```toml
# voxmatch.toml
port = 8000
data_dir = "/var/lib/voxmatch"
task_ttl_seconds = 86400
max_matrix_size = 2000000
```

An invalid value stops the server at once with exit code 2 and names the setting.

| setting | environment variable | default | meaning |
|---|---|---|---|
"""


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(none)" if default is None or default is PydanticUndefined else f"`{default}`"
        rows.append(
            f"| `{name}` | `VOXMATCH_{name.upper()}` | {shown} | {field.description or ''} |"
        )
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
